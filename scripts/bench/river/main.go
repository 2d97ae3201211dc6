// River's side of scripts/bench/runner_vs_river.sh: N no-op jobs inserted
// first, then drained by one River client with MaxWorkers = W, timed the way
// crates/jobs/examples/runner_bench.rs times our runner: wall clock from the
// client's start until a count of completed rows in the database, polled
// every 5 ms on a connection of its own, reaches N.
//
// The database must be fresh (empty); River's schema is migrated into it
// here with rivermigrate. Prints one line: "<jobs/s>".
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"log/slog"
	"os"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivermigrate"
)

type NoopArgs struct{}

func (NoopArgs) Kind() string { return "noop" }

func main() {
	url := flag.String("database-url", os.Getenv("DATABASE_URL"), "PostgreSQL URL of a fresh database")
	jobs := flag.Int("jobs", 20000, "no-op jobs to insert, then drain")
	workers := flag.Int("workers", 16, "MaxWorkers of the default queue")
	poolSize := flag.Int("pool", 8, "connections in the client's pool (our runner_bench gives each runner 8)")
	// River's defaults (100 ms, 1 s) cap a client at MaxWorkers jobs per
	// 100 ms; these are the settings of River's own benchmark command
	cooldown := flag.Duration("fetch-cooldown", 2*time.Millisecond, "River's FetchCooldown")
	pollInterval := flag.Duration("fetch-poll-interval", 20*time.Millisecond, "River's FetchPollInterval")
	flag.Parse()
	if *url == "" {
		log.Fatal("no -database-url (or DATABASE_URL)")
	}
	if *jobs <= 0 || *workers <= 0 || *poolSize <= 0 {
		log.Fatal("-jobs, -workers and -pool must be positive")
	}
	rate, err := run(context.Background(), *url, *jobs, *workers, *poolSize, *cooldown, *pollInterval)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%.0f\n", rate)
}

func run(ctx context.Context, url string, n, workers, poolSize int, cooldown, pollInterval time.Duration) (float64, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return 0, err
	}
	cfg.MaxConns = int32(poolSize)
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return 0, err
	}
	defer pool.Close()
	driver := riverpgxv5.New(pool)

	migrator, err := rivermigrate.New(driver, nil)
	if err != nil {
		return 0, err
	}
	if _, err := migrator.Migrate(ctx, rivermigrate.DirectionUp, nil); err != nil {
		return 0, fmt.Errorf("migrating River's schema: %w", err)
	}

	ws := river.NewWorkers()
	river.AddWorker(ws, river.WorkFunc(func(context.Context, *river.Job[NoopArgs]) error { return nil }))
	client, err := river.NewClient(driver, &river.Config{
		FetchCooldown:     cooldown,
		FetchPollInterval: pollInterval,
		Logger:            slog.New(slog.NewTextHandler(io.Discard, nil)),
		Queues:            map[string]river.QueueConfig{river.QueueDefault: {MaxWorkers: workers}},
		Workers:           ws,
	})
	if err != nil {
		return 0, err
	}

	params := make([]river.InsertManyParams, n)
	for i := range params {
		params[i] = river.InsertManyParams{Args: NoopArgs{}}
	}
	if _, err := client.InsertManyFast(ctx, params); err != nil {
		return 0, fmt.Errorf("inserting jobs: %w", err)
	}

	// the poller's own connection, as runner_bench's count uses its own pool
	counter, err := pgx.Connect(ctx, url)
	if err != nil {
		return 0, err
	}
	defer counter.Close(ctx)

	started := time.Now()
	if err := client.Start(ctx); err != nil {
		return 0, err
	}
	for {
		var done int
		if err := counter.QueryRow(ctx, "SELECT count(*) FROM river_job WHERE state = 'completed'").Scan(&done); err != nil {
			return 0, err
		}
		if done >= n {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	elapsed := time.Since(started)
	stopCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := client.Stop(stopCtx); err != nil {
		return 0, err
	}
	return float64(n) / elapsed.Seconds(), nil
}
