//! The two record services: contacts and companies.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{DomainError, ErrorCode};

/// Which dataset a job or query is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Service {
    Contact,
    Company,
}

impl Service {
    pub const ALL: [Service; 2] = [Service::Contact, Service::Company];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Contact => "contact",
            Self::Company => "company",
        }
    }

    /// The PostgreSQL table of the service's records: `contacts` or
    /// `companies`. A catalogue-fixed name, safe to put in SQL.
    pub fn table(self) -> &'static str {
        match self {
            Self::Contact => "contacts",
            Self::Company => "companies",
        }
    }
}

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Service {
    type Err = DomainError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "contact" => Ok(Self::Contact),
            "company" => Ok(Self::Company),
            other => Err(DomainError::new(
                ErrorCode::UnknownService,
                format!("unknown service '{other}'; use 'contact' or 'company'"),
            )),
        }
    }
}
