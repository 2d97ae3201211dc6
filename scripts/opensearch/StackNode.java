/*
 * Launcher for the single-node OpenSearch of scripts/stack.sh.
 *
 * It does what org.codelibs.opensearch.runner.OpenSearchRunner#main does, with two fixes:
 *  - a failure to start is printed (stack trace on stderr, i.e. in .stack/opensearch.log)
 *    instead of a silent exit 1;
 *  - the HTTP port is exactly -baseHttpPort + 1: the stock main probes for a free port from
 *    there up to 9299 (silently moving to 9201 if 9200 is taken, and refusing any port > 9299);
 *  - the node's name is -Dstack.node.name when given (the runner names its first node "Node 1"
 *    in every JVM; a cluster of one JVM per node needs distinct names to bootstrap).
 *
 * Arguments are the runner's own (-basePath, -numOfNode, -baseHttpPort, -clusterName, ...).
 * scripts/stack.sh compiles this with javac against .stack/opensearch/lib/* and falls back to
 * the stock main when no javac is available.
 */
import org.codelibs.opensearch.runner.OpenSearchRunner;

public final class StackNode {
    private StackNode() {}

    public static void main(final String[] args) throws InterruptedException {
        final OpenSearchRunner runner = new OpenSearchRunner();
        runner.setMaxHttpPort(-1); // use baseHttpPort + n as is
        final String nodeName = System.getProperty("stack.node.name");
        if (nodeName != null && !nodeName.isEmpty()) {
            // runs before the runner's own defaults, which only fill what is absent
            runner.onBuild((index, settings) -> settings.put("node.name", nodeName));
        }
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            try {
                runner.close();
            } catch (final Exception e) {
                System.err.println("[StackNode] error while closing OpenSearch: " + e);
            }
        }, "stack-node-shutdown"));
        try {
            runner.build(args);
        } catch (final Throwable t) {
            System.err.println("[StackNode] OpenSearch failed to start:");
            t.printStackTrace();
            System.out.flush();
            System.err.flush();
            Runtime.getRuntime().halt(1); // skip the shutdown hook: nothing useful to close
        }
        System.out.println("[StackNode] OpenSearch node started");
        while (!runner.isClosed()) {
            Thread.sleep(1000);
        }
    }
}
