//! compose.yaml against the real configuration: it parses, its application
//! services build this repository's image, and every variable they set is
//! one that `connectra_config::Settings` reads (or `CONNECTRA_CONFIG`,
//! `RUST_LOG`; the CLI's `CONNECTRA_URL` and `CONNECTRA_API_KEY` for the
//! `cli` service), with a value the configuration accepts.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use connectra_config::Settings;
use serde::de::{self, Deserializer, Visitor};

/// The names of a struct's fields as serde sees them, asked of its
/// `Deserialize` implementation: a deserializer that records the field
/// list it is handed and stops.
struct FieldNames(&'static [&'static str]);

#[derive(Debug)]
struct Stop(String);

impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Stop {}

impl de::Error for Stop {
    fn custom<T: std::fmt::Display>(msg: T) -> Self {
        Self(msg.to_string())
    }
}

struct Recorder<'a>(&'a mut Option<FieldNames>);

impl<'de> Deserializer<'de> for Recorder<'_> {
    type Error = Stop;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
        Err(Stop("not a struct".into()))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Stop> {
        *self.0 = Some(FieldNames(fields));
        Err(Stop("recorded".into()))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map enum identifier ignored_any
    }
}

/// Every variable the services' configuration reads.
fn known_variables() -> BTreeSet<String> {
    let mut recorded = None;
    let _ = <Settings as serde::Deserialize>::deserialize(Recorder(&mut recorded));
    let fields = recorded.expect("Settings is a struct").0;
    assert!(fields.contains(&"database_url"), "{fields:?}");
    let mut known: BTreeSet<String> = fields.iter().map(|f| f.to_uppercase()).collect();
    // read outside Settings: the file's name, and the log filter
    known.extend(["CONNECTRA_CONFIG".to_string(), "RUST_LOG".to_string()]);
    known
}

/// The CLI's own variables.
const CLI_VARIABLES: [&str; 2] = ["CONNECTRA_URL", "CONNECTRA_API_KEY"];

fn compose() -> serde_norway::Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../compose.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut value: serde_norway::Value = serde_norway::from_str(&text)
        .unwrap_or_else(|e| panic!("{} is not valid YAML: {e}", path.display()));
    value.apply_merge().unwrap();
    value
}

/// The services built from this repository, each with its environment.
fn app_services() -> BTreeMap<String, BTreeMap<String, String>> {
    let compose = compose();
    let services = compose["services"].as_mapping().expect("services");
    let mut out = BTreeMap::new();
    for (name, service) in services {
        let name = name.as_str().unwrap().to_string();
        if service.get("build").is_none() {
            assert!(
                !service["image"]
                    .as_str()
                    .unwrap_or("")
                    .starts_with("connectra-jobs"),
                "{name} names the application image without building it"
            );
            continue;
        }
        let mut env = BTreeMap::new();
        match &service["environment"] {
            serde_norway::Value::Mapping(m) => {
                for (k, v) in m {
                    let value = match v {
                        serde_norway::Value::String(s) => s.clone(),
                        serde_norway::Value::Null => String::new(),
                        other => serde_norway::to_string(other).unwrap().trim().to_string(),
                    };
                    env.insert(k.as_str().unwrap().to_string(), value);
                }
            }
            serde_norway::Value::Sequence(items) => {
                for item in items {
                    let (k, v) = item.as_str().unwrap().split_once('=').unwrap();
                    env.insert(k.to_string(), v.to_string());
                }
            }
            serde_norway::Value::Null => {}
            other => panic!("{name}: environment is {other:?}"),
        }
        out.insert(name, env);
    }
    out
}

#[test]
fn the_application_services_build_the_image_and_set_only_known_variables() {
    let known = known_variables();
    let services = app_services();
    for name in ["api-server", "job-runner", "retry-runner", "cli"] {
        assert!(services.contains_key(name), "{name} is built here");
    }
    for (name, env) in &services {
        for var in env.keys() {
            let ok = if name == "cli" {
                CLI_VARIABLES.contains(&var.as_str())
            } else {
                known.contains(var)
            };
            assert!(
                ok,
                "compose.yaml: service {name} sets {var}, which nothing reads (known: {known:?})"
            );
        }
        if name == "cli" {
            continue;
        }
        // and the real configuration accepts the values
        let vars: HashMap<String, String> = env
            .iter()
            .filter(|(k, _)| known.contains(*k) && *k != "RUST_LOG" && *k != "CONNECTRA_CONFIG")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let source = config::Environment::default().source(Some(vars));
        let settings = Settings::load_from(None, source)
            .unwrap_or_else(|e| panic!("compose.yaml: service {name}: {e}"));
        settings
            .validate_for_api()
            .unwrap_or_else(|e| panic!("compose.yaml: service {name}: {e}"));
        assert!(settings.opensearch_url.is_some(), "{name} uses OpenSearch");
    }
}

#[test]
fn the_recorder_sees_a_misspelt_variable() {
    let known = known_variables();
    assert!(
        known.contains("S3_UPLOAD_FILE_PATH_PRIFIX"),
        "private fields count"
    );
    assert!(known.contains("OPENSEARCH_URL"));
    assert!(!known.contains("OPENSEARCH_URI"));
    assert!(!known.contains("DATABASE_URI"));
}
