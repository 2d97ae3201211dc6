// bulkload: a bare bulk indexer, the baseline of scripts/bench/import_vs_esbulk.sh
// where esbulk cannot be installed. It does what esbulk does and nothing else:
// reads NDJSON documents, takes each one's _id from a field, and sends them as
// `index` actions through opensearch-go's BulkIndexer (several workers, each
// flushing a bulk request once it holds -flush-bytes). No mapping, settings or
// refresh work: the caller prepares the index.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"os"
	"sync/atomic"

	"github.com/opensearch-project/opensearch-go/v4"
	"github.com/opensearch-project/opensearch-go/v4/opensearchapi"
	"github.com/opensearch-project/opensearch-go/v4/opensearchutil"
)

func main() {
	server := flag.String("server", "http://127.0.0.1:9200", "OpenSearch URL")
	index := flag.String("index", "", "target index")
	idField := flag.String("id", "uuid", "the document field that is its _id")
	workers := flag.Int("w", 4, "bulk requests in flight")
	flushBytes := flag.Int("flush-bytes", 5<<20, "bytes per bulk request")
	flag.Parse()
	if *index == "" || flag.NArg() != 1 {
		log.Fatal("usage: bulkload -index NAME [-server URL] [-id FIELD] [-w N] [-flush-bytes N] FILE.ndjson")
	}
	client, err := opensearchapi.NewClient(opensearchapi.Config{
		Client: opensearch.Config{Addresses: []string{*server}},
	})
	if err != nil {
		log.Fatal(err)
	}
	var failed atomic.Int64
	bi, err := opensearchutil.NewBulkIndexer(opensearchutil.BulkIndexerConfig{
		Client:     client,
		Index:      *index,
		NumWorkers: *workers,
		FlushBytes: *flushBytes,
		OnError:    func(_ context.Context, err error) { log.Print(err); failed.Add(1) },
	})
	if err != nil {
		log.Fatal(err)
	}
	f, err := os.Open(flag.Arg(0))
	if err != nil {
		log.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	ctx := context.Background()
	n := 0
	for sc.Scan() {
		line := append([]byte(nil), sc.Bytes()...)
		var doc map[string]json.RawMessage
		if err := json.Unmarshal(line, &doc); err != nil {
			log.Fatalf("line %d: %v", n+1, err)
		}
		var id string
		if err := json.Unmarshal(doc[*idField], &id); err != nil {
			log.Fatalf("line %d: no string %q: %v", n+1, *idField, err)
		}
		err := bi.Add(ctx, opensearchutil.BulkIndexerItem{
			Action:     "index",
			DocumentID: id,
			Body:       bytes.NewReader(line),
			OnFailure: func(_ context.Context, _ opensearchutil.BulkIndexerItem, _ opensearchapi.BulkRespItem, err error) {
				failed.Add(1)
			},
		})
		if err != nil {
			log.Fatal(err)
		}
		n++
	}
	if err := sc.Err(); err != nil {
		log.Fatal(err)
	}
	if err := bi.Close(ctx); err != nil {
		log.Fatal(err)
	}
	st := bi.Stats()
	if failed.Load() > 0 || st.NumFailed > 0 {
		log.Fatalf("%d documents failed", st.NumFailed)
	}
	fmt.Println(st.NumIndexed)
}
