//! The state machine on a real database: every `JobRepo` method that reads
//! or writes a job's status runs on a job in every status. What it did must
//! be exactly what its table in `connectra_persistence::jobs::moves` says,
//! and every status change must be one that `JobStatus::can_become` allows.
//! A method that refuses a job leaves its row untouched, to the last column.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use connectra_domain::job::{JobResponse, JobStatus, Transition};
use connectra_persistence::jobs::{moves, CancelOutcome, ClaimKind, Progress};
use connectra_persistence::testing::TestDb;
use connectra_persistence::{Job, JobRepo};
use diesel::sql_types::{Bool, Integer, Text};
use diesel_async::RunQueryDsl;
use serde_json::json;

const RUNNER: &str = "runner-a";
const JOB_TYPE: &str = "state_machine";
const LEASE: Duration = Duration::from_secs(300);
const MAX_RESCUES: i32 = 3;

/// How each job starts: held by `RUNNER` in attempt 1, with retries left,
/// whatever its status (so that only the status can make a method refuse it).
#[derive(Debug, Clone, Copy)]
struct Fixture {
    lease_expired: bool,
    run_after_set: bool,
    rescues: i32,
    cancel_requested: bool,
}

const HELD: Fixture = Fixture {
    lease_expired: false,
    run_after_set: true,
    rescues: 0,
    cancel_requested: false,
};

/// What a method should do to a job in one status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// The status changes to this one.
    Becomes(JobStatus),
    /// The status stays, other columns change (a lease renewal, progress,
    /// a cancel request, a dropped retry).
    Keeps,
    /// The row stays as it was.
    Untouched,
}

fn by_table(moves: &[Transition], from: JobStatus) -> Expect {
    moves
        .iter()
        .find(|t| t.from() == from)
        .map_or(Expect::Untouched, |t| Expect::Becomes(t.to()))
}

fn keeps_if(held: bool) -> Expect {
    if held {
        Expect::Keeps
    } else {
        Expect::Untouched
    }
}

#[derive(Debug, Clone, Copy)]
enum Method {
    Claim(ClaimKind),
    StartMany(ClaimKind),
    RenewLeases,
    RecordProgress,
    CompleteMany,
    Complete,
    Fail,
    Release,
    RescueExpired,
    Cancel,
}

struct Case {
    method: Method,
    fixture: Fixture,
    expect: fn(JobStatus) -> Expect,
}

fn cases() -> Vec<Case> {
    use Method::*;
    let expired = Fixture {
        lease_expired: true,
        ..HELD
    };
    vec![
        Case {
            method: Claim(ClaimKind::FirstTime),
            fixture: HELD,
            expect: |s| by_table(&[moves::CLAIM_FIRST_TIME], s),
        },
        Case {
            method: Claim(ClaimKind::Retry),
            fixture: HELD,
            expect: |s| by_table(&[moves::CLAIM_RETRY], s),
        },
        // a failed job without retries left is not claimed for one
        Case {
            method: Claim(ClaimKind::Retry),
            fixture: Fixture {
                run_after_set: false,
                ..HELD
            },
            expect: |_| Expect::Untouched,
        },
        Case {
            method: StartMany(ClaimKind::FirstTime),
            fixture: HELD,
            expect: |s| by_table(&[moves::START_FIRST_TIME], s),
        },
        Case {
            method: StartMany(ClaimKind::Retry),
            fixture: HELD,
            expect: |s| by_table(&[moves::START_RETRY], s),
        },
        Case {
            method: RenewLeases,
            fixture: HELD,
            expect: |s| keeps_if(s.is_leased()),
        },
        Case {
            method: RecordProgress,
            fixture: HELD,
            expect: |s| keeps_if(s.is_leased()),
        },
        Case {
            method: CompleteMany,
            fixture: HELD,
            expect: |s| by_table(moves::COMPLETE, s),
        },
        Case {
            method: Complete,
            fixture: HELD,
            expect: |s| by_table(moves::COMPLETE, s),
        },
        Case {
            method: Fail,
            fixture: HELD,
            expect: |s| by_table(moves::FAIL, s),
        },
        Case {
            method: Release,
            fixture: HELD,
            expect: |s| by_table(moves::RELEASE, s),
        },
        // a live lease is not rescued
        Case {
            method: RescueExpired,
            fixture: HELD,
            expect: |_| Expect::Untouched,
        },
        Case {
            method: RescueExpired,
            fixture: expired,
            expect: |s| by_table(moves::RELEASE, s),
        },
        // a running job rescued once too often is given up
        Case {
            method: RescueExpired,
            fixture: Fixture {
                rescues: MAX_RESCUES,
                ..expired
            },
            expect: |s| {
                if s.is_running() {
                    by_table(moves::GIVE_UP, s)
                } else {
                    by_table(moves::RELEASE, s)
                }
            },
        },
        // so is a job whose cancel was requested
        Case {
            method: RescueExpired,
            fixture: Fixture {
                cancel_requested: true,
                ..expired
            },
            expect: |s| by_table(moves::GIVE_UP, s),
        },
        Case {
            method: Cancel,
            fixture: HELD,
            expect: |s| match by_table(moves::CANCEL, s) {
                // a waiting retry is dropped; a running job is asked to stop
                Expect::Untouched if s == JobStatus::Failed || s.is_running() => Expect::Keeps,
                e => e,
            },
        },
        Case {
            method: Cancel,
            fixture: Fixture {
                run_after_set: false,
                ..HELD
            },
            expect: |s| match by_table(moves::CANCEL, s) {
                // a failed job without retries left has nothing to cancel
                Expect::Untouched if s.is_running() => Expect::Keeps,
                e => e,
            },
        },
    ]
}

/// One job in each status, as the fixture says; the table is emptied first
/// so that the rescue and the claims see only these.
async fn seed(repo: &JobRepo, f: Fixture) -> Vec<Job> {
    let mut conn = repo.pool().get().await.unwrap();
    diesel::sql_query("DELETE FROM jobs")
        .execute(&mut conn)
        .await
        .unwrap();
    let mut jobs = Vec::new();
    for status in JobStatus::ALL {
        let job: Job = diesel::sql_query(
            "INSERT INTO jobs (uuid, job_type, data, status, retry_count, retry_interval,
                 run_after, attempts, rescues, locked_by, locked_until, cancel_requested)
             VALUES (gen_random_uuid(), $1, '{}', $2, 3, 30,
                 CASE WHEN $3 THEN now() - interval '1 second' END, 1, $4, $5,
                 now() + CASE WHEN $6 THEN interval '-1 minute' ELSE interval '1 minute' END, $7)
             RETURNING *",
        )
        .bind::<Text, _>(JOB_TYPE)
        .bind::<Text, _>(status.as_str())
        .bind::<Bool, _>(f.run_after_set)
        .bind::<Integer, _>(f.rescues)
        .bind::<Text, _>(RUNNER)
        .bind::<Bool, _>(f.lease_expired)
        .bind::<Bool, _>(f.cancel_requested)
        .get_result(&mut conn)
        .await
        .unwrap();
        assert_eq!(job.status, status);
        jobs.push(job);
    }
    jobs
}

async fn run(repo: &JobRepo, method: Method, jobs: &[Job]) {
    let types = vec![JOB_TYPE.to_string()];
    let claims: Vec<(i64, i32)> = jobs.iter().map(|j| (j.id, j.attempts)).collect();
    let response = JobResponse {
        messages: Some("state machine".into()),
        ..JobResponse::default()
    };
    match method {
        Method::Claim(kind) => {
            repo.claim(kind, RUNNER, &types, 100, LEASE).await.unwrap();
        }
        Method::StartMany(kind) => {
            repo.start_many(kind, RUNNER, &claims, LEASE).await.unwrap();
        }
        Method::RenewLeases => {
            let ids: Vec<i64> = jobs.iter().map(|j| j.id).collect();
            repo.renew_leases(RUNNER, &ids, LEASE).await.unwrap();
        }
        Method::CompleteMany => {
            let done: Vec<_> = claims.iter().map(|&(id, a)| (id, a, &response)).collect();
            repo.complete_many(RUNNER, &done).await.unwrap();
        }
        Method::RescueExpired => {
            repo.rescue_expired(MAX_RESCUES).await.unwrap();
        }
        Method::RecordProgress
        | Method::Complete
        | Method::Fail
        | Method::Release
        | Method::Cancel => {
            for job in jobs {
                let fence = job.fence(RUNNER);
                let written = match method {
                    Method::RecordProgress => {
                        let progress = Progress {
                            rows_processed: 7,
                            rows_rejected: 1,
                            bytes_read: 100,
                            bytes_total: Some(200),
                        };
                        repo.record_progress(fence, &progress, Some(&json!({"line": 8})))
                            .await
                            .unwrap()
                    }
                    Method::Complete => repo.complete(fence, &response).await.unwrap(),
                    Method::Fail => repo.fail(fence, &response).await.unwrap(),
                    Method::Release => repo.release(fence).await.unwrap(),
                    _ => {
                        let outcome = repo.cancel(job.uuid).await.unwrap().unwrap();
                        !matches!(outcome, CancelOutcome::AlreadyFinished(_))
                    }
                };
                // what a method answers agrees with what it did
                let after = repo.get(job.uuid).await.unwrap().unwrap();
                assert_eq!(
                    written,
                    after != *job,
                    "{method:?} from {} answered {written}",
                    job.status
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_method_from_every_status_does_exactly_what_the_transition_table_allows() {
    let db = TestDb::new().await;
    let repo = JobRepo::new(db.pool());
    let mut made = std::collections::BTreeSet::new();
    for case in cases() {
        let before = seed(&repo, case.fixture).await;
        run(&repo, case.method, &before).await;
        for job in &before {
            let after = repo.get(job.uuid).await.unwrap().unwrap();
            let (from, to) = (job.status, after.status);
            let what = format!("{:?} with {:?} from {from}", case.method, case.fixture);
            if from != to {
                assert!(
                    from.can_become(to),
                    "{what}: {from} -> {to} is not in the table"
                );
                made.insert((from, to));
            }
            match (case.expect)(from) {
                Expect::Becomes(next) => assert_eq!(to, next, "{what}"),
                Expect::Keeps => {
                    assert_eq!(to, from, "{what}");
                    assert_ne!(after, *job, "{what}: nothing was written");
                }
                Expect::Untouched => assert_eq!(after, *job, "{what}: the row changed"),
            }
        }
    }
    // and every transition of the table is made by some method
    let allowed: std::collections::BTreeSet<_> = JobStatus::ALL
        .into_iter()
        .flat_map(|a| JobStatus::ALL.into_iter().map(move |b| (a, b)))
        .filter(|(a, b)| a.can_become(*b))
        .collect();
    assert_eq!(made, allowed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_and_the_enum_know_the_same_statuses() {
    #[derive(diesel::QueryableByName)]
    struct Def {
        #[diesel(sql_type = Text)]
        def: String,
    }
    let db = TestDb::new().await;
    let mut conn = db.pool().get().await.unwrap();
    let def: Def = diesel::sql_query(
        "SELECT pg_get_constraintdef(oid) AS def FROM pg_constraint
         WHERE conrelid = 'jobs'::regclass AND contype = 'c'
           AND pg_get_constraintdef(oid) LIKE '%status%'",
    )
    .get_result(&mut conn)
    .await
    .unwrap();
    let mut in_check: Vec<&str> = def.def.split('\'').skip(1).step_by(2).collect();
    in_check.sort_unstable();
    let mut known: Vec<&str> = JobStatus::ALL.iter().map(|s| s.as_str()).collect();
    known.sort_unstable();
    assert_eq!(in_check, known, "{}", def.def);
}

/// An error and its sources, as one line.
fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_status_the_enum_does_not_know_is_an_error_not_a_guess() {
    let db = TestDb::new().await;
    let repo = JobRepo::new(db.pool());
    let mut conn = db.pool().get().await.unwrap();
    // only a database whose constraint was changed behind our back can hold one
    diesel::sql_query(
        "DO $$ DECLARE c text; BEGIN
             SELECT conname INTO c FROM pg_constraint
             WHERE conrelid = 'jobs'::regclass AND contype = 'c'
               AND pg_get_constraintdef(oid) LIKE '%status%';
             EXECUTE format('ALTER TABLE jobs DROP CONSTRAINT %I', c);
         END $$",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    let odd = uuid::Uuid::new_v4();
    diesel::sql_query(
        "INSERT INTO jobs (uuid, job_type, data, status) VALUES ($1, 'x', '{}', 'paused')",
    )
    .bind::<diesel::sql_types::Uuid, _>(odd)
    .execute(&mut conn)
    .await
    .unwrap();
    let err = chain(&repo.get(odd).await.unwrap_err());
    assert!(err.contains("jobs.status holds 'paused'"), "{err}");
    let filter = connectra_domain::job::parse_list_request(&json!({})).unwrap();
    let err = chain(&repo.list(&filter).await.unwrap_err());
    assert!(err.contains("jobs.status holds 'paused'"), "{err}");
    // a cancel's RETURNING reads the row too
    assert!(repo.cancel(odd).await.is_err());
}
