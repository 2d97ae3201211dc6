//! A list element that holds a comma survives an export and the re-import of
//! the exported file, on both search backends (real PostgreSQL, SeaweedFS and
//! OpenSearch).

#![cfg(feature = "builtin")]
#![allow(clippy::unwrap_used)]

mod common;

use common::{exec, strings, Harness};
use connectra_domain::job::JobStatus;
use connectra_domain::Service;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_list_element_with_a_comma_survives_export_and_reimport() {
    for opensearch in [false, true] {
        let mut h = Harness::new(opensearch).await;
        h.start(100);
        // `;` splits, so the first element keeps its comma (spec §2)
        let csv = "name,domain,industries\n\
                   Acme,acme.io,\"R&D, Europe; Sales\"\n\
                   Plain,plain.io,SaaS; Software\n";
        let key = h.upload("companies.csv", csv.as_bytes()).await;
        let job = h.import(&key).await;
        assert_eq!(job.status, JobStatus::Completed, "{}", job.job_response);
        let stored = "SELECT array_to_string(industries, '|') AS s FROM companies ORDER BY name";
        let before = strings(&h.pool(), stored).await;
        assert_eq!(before, ["R&D, Europe|Sales", "SaaS|Software"]);
        h.search.refresh(Service::Company).await.unwrap();

        let job = h
            .export(
                json!({"select_columns": ["uuid", "name", "industries"],
                       "order_by": [{"order_by": "name", "order_direction": "asc"}]}),
                "company",
            )
            .await;
        assert_eq!(job.status, JobStatus::Completed, "{}", job.job_response);
        let exported_key = job.job_response["s3_key"].as_str().unwrap().to_string();
        let exported = h.read_object(&exported_key).await;
        assert!(
            exported.contains("R&D\\, Europe, Sales"),
            "the element's comma is escaped: {exported}"
        );
        assert!(
            exported.contains(",\"SaaS, Software\"\n"),
            "a plain list is joined with ', ' as before: {exported}"
        );

        // the exported file, imported into empty tables, gives the same lists
        exec(&h.pool(), "DELETE FROM companies").await;
        let job = h.import(&exported_key).await;
        assert_eq!(job.status, JobStatus::Completed, "{}", job.job_response);
        assert_eq!(job.rows_processed, 2, "{}", job.job_response);
        assert_eq!(strings(&h.pool(), stored).await, before);
        h.stop().await;
    }
}
