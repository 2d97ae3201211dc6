//! The field catalogue: every field of each service, with its kind.
//!
//! The names here are at once the PostgreSQL column names and the search
//! index's field names. Code that builds SQL or search requests takes names
//! only from a [`FieldDef`] found here, never from a request's strings, so a
//! request can never smuggle an identifier into a query.

use std::fmt;

use crate::service::Service;

/// What a field holds, and so which VQL operators and sorts it supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FieldKind {
    /// An exact-match string.
    Keyword,
    /// A full-text string with a keyword subfield for exact matches and sorting.
    Text,
    /// A list of exact-match strings (`text[]`).
    KeywordList,
    /// A 32-bit integer.
    Integer,
    /// A 64-bit integer.
    BigInt,
    /// A uuid, matched and sorted as its canonical string.
    Uuid,
    /// A timestamp with time zone.
    Timestamp,
    /// A JSON object (`jsonb`); selectable only.
    Json,
}

impl FieldKind {
    /// Whether `keyword_match` may name a field of this kind.
    pub const fn keyword_matchable(self) -> bool {
        matches!(
            self,
            Self::Keyword | Self::Text | Self::KeywordList | Self::Uuid
        )
    }

    /// Whether `text_match` may name a field of this kind.
    pub const fn text_matchable(self) -> bool {
        matches!(self, Self::Text)
    }

    /// Whether `range_query` may name a field of this kind.
    pub const fn rangeable(self) -> bool {
        matches!(self, Self::Integer | Self::BigInt | Self::Timestamp)
    }

    /// Whether `order_by` may name a field of this kind: every scalar kind.
    pub const fn sortable(self) -> bool {
        !matches!(self, Self::KeywordList | Self::Json)
    }

    /// Whether a field of this kind holds a list of values.
    pub const fn is_list(self) -> bool {
        matches!(self, Self::KeywordList)
    }

    /// The kind's name as used in error messages: `keyword`, `keyword list`, …
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Keyword => "keyword",
            Self::Text => "text",
            Self::KeywordList => "keyword list",
            Self::Integer => "integer",
            Self::BigInt => "bigint",
            Self::Uuid => "uuid",
            Self::Timestamp => "timestamp",
            Self::Json => "json",
        }
    }
}

impl fmt::Display for FieldKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One field of a service: its name (column and search field) and kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FieldDef {
    pub name: &'static str,
    pub kind: FieldKind,
}

impl FieldDef {
    const fn new(name: &'static str, kind: FieldKind) -> Self {
        Self { name, kind }
    }

    /// See [`FieldKind::keyword_matchable`].
    pub const fn keyword_matchable(&self) -> bool {
        self.kind.keyword_matchable()
    }

    /// See [`FieldKind::text_matchable`].
    pub const fn text_matchable(&self) -> bool {
        self.kind.text_matchable()
    }

    /// See [`FieldKind::rangeable`].
    pub const fn rangeable(&self) -> bool {
        self.kind.rangeable()
    }

    /// See [`FieldKind::sortable`].
    pub const fn sortable(&self) -> bool {
        self.kind.sortable()
    }

    /// See [`FieldKind::is_list`].
    pub const fn is_list(&self) -> bool {
        self.kind.is_list()
    }

    /// Whether a record may lack a value for this field. Only the identity
    /// and bookkeeping fields (`id`, `uuid`, `created_at`, `updated_at`) are
    /// always present; a sort cursor may carry `null` for any other field.
    pub fn nullable(&self) -> bool {
        !matches!(self.name, "id" | "uuid" | "created_at" | "updated_at")
    }
}

use FieldKind::{BigInt, Integer, Json, Keyword, KeywordList, Text, Timestamp, Uuid};

static COMPANY_FIELDS: [FieldDef; 20] = [
    FieldDef::new("id", BigInt),
    FieldDef::new("uuid", Uuid),
    FieldDef::new("name", Text),
    FieldDef::new("website", Keyword),
    FieldDef::new("domain", Keyword),
    FieldDef::new("industries", KeywordList),
    FieldDef::new("keywords", KeywordList),
    FieldDef::new("technologies", KeywordList),
    FieldDef::new("employees_count", Integer),
    FieldDef::new("annual_revenue", BigInt),
    FieldDef::new("total_funding", BigInt),
    FieldDef::new("founded_year", Integer),
    FieldDef::new("country", Keyword),
    FieldDef::new("state", Keyword),
    FieldDef::new("city", Keyword),
    FieldDef::new("phone", Keyword),
    FieldDef::new("linkedin_url", Keyword),
    FieldDef::new("extra", Json),
    FieldDef::new("created_at", Timestamp),
    FieldDef::new("updated_at", Timestamp),
];

static CONTACT_FIELDS: [FieldDef; 18] = [
    FieldDef::new("id", BigInt),
    FieldDef::new("uuid", Uuid),
    FieldDef::new("first_name", Text),
    FieldDef::new("last_name", Text),
    FieldDef::new("email", Keyword),
    FieldDef::new("title", Text),
    FieldDef::new("seniority", Keyword),
    FieldDef::new("departments", KeywordList),
    FieldDef::new("phone", Keyword),
    FieldDef::new("linkedin_url", Keyword),
    FieldDef::new("email_status", Keyword),
    FieldDef::new("country", Keyword),
    FieldDef::new("state", Keyword),
    FieldDef::new("city", Keyword),
    FieldDef::new("company_id", Uuid),
    FieldDef::new("extra", Json),
    FieldDef::new("created_at", Timestamp),
    FieldDef::new("updated_at", Timestamp),
];

/// Every field of `service`, in catalogue order: `id`, `uuid`, the service's
/// own fields, then `extra`, `created_at`, `updated_at`.
pub fn fields(service: Service) -> &'static [FieldDef] {
    match service {
        Service::Company => &COMPANY_FIELDS,
        Service::Contact => &CONTACT_FIELDS,
    }
}

/// The field of `service` called `name`, if there is one. Names are exact
/// (case-sensitive).
pub fn field(service: Service, name: &str) -> Option<&'static FieldDef> {
    fields(service).iter().find(|f| f.name == name)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn names(service: Service) -> Vec<&'static str> {
        fields(service).iter().map(|f| f.name).collect()
    }

    #[test]
    fn company_fields_are_listed_in_catalogue_order() {
        assert_eq!(
            names(Service::Company),
            [
                "id",
                "uuid",
                "name",
                "website",
                "domain",
                "industries",
                "keywords",
                "technologies",
                "employees_count",
                "annual_revenue",
                "total_funding",
                "founded_year",
                "country",
                "state",
                "city",
                "phone",
                "linkedin_url",
                "extra",
                "created_at",
                "updated_at",
            ]
        );
    }

    #[test]
    fn contact_fields_are_listed_in_catalogue_order() {
        assert_eq!(
            names(Service::Contact),
            [
                "id",
                "uuid",
                "first_name",
                "last_name",
                "email",
                "title",
                "seniority",
                "departments",
                "phone",
                "linkedin_url",
                "email_status",
                "country",
                "state",
                "city",
                "company_id",
                "extra",
                "created_at",
                "updated_at",
            ]
        );
    }

    #[test]
    fn field_names_are_unique_within_each_service() {
        for service in Service::ALL {
            let all = names(service);
            let unique: HashSet<_> = all.iter().collect();
            assert_eq!(unique.len(), all.len(), "duplicate field in {service}");
        }
    }

    #[test]
    fn field_names_are_safe_sql_identifiers() {
        for service in Service::ALL {
            for f in fields(service) {
                assert!(
                    !f.name.is_empty()
                        && f.name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                    "{} is not a plain lower-case identifier",
                    f.name
                );
            }
        }
    }

    #[test]
    fn kinds_match_the_data_model() {
        let kind = |s, n| field(s, n).map(|f| f.kind);
        assert_eq!(kind(Service::Company, "id"), Some(BigInt));
        assert_eq!(kind(Service::Contact, "uuid"), Some(Uuid));
        assert_eq!(kind(Service::Company, "name"), Some(Text));
        assert_eq!(kind(Service::Company, "website"), Some(Keyword));
        assert_eq!(kind(Service::Company, "industries"), Some(KeywordList));
        assert_eq!(kind(Service::Company, "employees_count"), Some(Integer));
        assert_eq!(kind(Service::Company, "annual_revenue"), Some(BigInt));
        assert_eq!(kind(Service::Company, "founded_year"), Some(Integer));
        assert_eq!(kind(Service::Contact, "title"), Some(Text));
        assert_eq!(kind(Service::Contact, "departments"), Some(KeywordList));
        assert_eq!(kind(Service::Contact, "company_id"), Some(Uuid));
        assert_eq!(kind(Service::Contact, "email_status"), Some(Keyword));
        for service in Service::ALL {
            assert_eq!(kind(service, "extra"), Some(Json));
            assert_eq!(kind(service, "created_at"), Some(Timestamp));
            assert_eq!(kind(service, "updated_at"), Some(Timestamp));
        }
    }

    #[test]
    fn lookup_is_per_service_and_exact() {
        assert!(field(Service::Contact, "email").is_some());
        assert!(field(Service::Company, "email").is_none());
        assert!(field(Service::Company, "domain").is_some());
        assert!(field(Service::Contact, "domain").is_none());
        assert!(field(Service::Contact, "Email").is_none());
        assert!(field(Service::Contact, "email ").is_none());
        assert!(field(Service::Contact, "").is_none());
    }

    #[test]
    fn lookup_returns_the_catalogue_entry_itself() {
        let found = field(Service::Company, "city").unwrap();
        let listed = fields(Service::Company)
            .iter()
            .find(|f| f.name == "city")
            .unwrap();
        assert!(std::ptr::eq(found, listed));
        assert_eq!(found.kind, Keyword);
    }

    #[test]
    fn operator_support_follows_the_kind() {
        let all = [
            Keyword,
            Text,
            KeywordList,
            Integer,
            BigInt,
            Uuid,
            Timestamp,
            Json,
        ];
        let keyword: Vec<_> = all.iter().filter(|k| k.keyword_matchable()).collect();
        assert_eq!(keyword, [&Keyword, &Text, &KeywordList, &Uuid]);
        let text: Vec<_> = all.iter().filter(|k| k.text_matchable()).collect();
        assert_eq!(text, [&Text]);
        let range: Vec<_> = all.iter().filter(|k| k.rangeable()).collect();
        assert_eq!(range, [&Integer, &BigInt, &Timestamp]);
        let sort: Vec<_> = all.iter().filter(|k| k.sortable()).collect();
        assert_eq!(
            sort,
            [&Keyword, &Text, &Integer, &BigInt, &Uuid, &Timestamp]
        );
        let list: Vec<_> = all.iter().filter(|k| k.is_list()).collect();
        assert_eq!(list, [&KeywordList]);
    }

    #[test]
    fn field_def_methods_delegate_to_the_kind() {
        for service in Service::ALL {
            for f in fields(service) {
                assert_eq!(f.keyword_matchable(), f.kind.keyword_matchable());
                assert_eq!(f.text_matchable(), f.kind.text_matchable());
                assert_eq!(f.rangeable(), f.kind.rangeable());
                assert_eq!(f.sortable(), f.kind.sortable());
                assert_eq!(f.is_list(), f.kind.is_list());
            }
        }
    }

    #[test]
    fn only_identity_and_bookkeeping_fields_are_never_null() {
        let non_null: Vec<_> = fields(Service::Contact)
            .iter()
            .filter(|f| !f.nullable())
            .map(|f| f.name)
            .collect();
        assert_eq!(non_null, ["id", "uuid", "created_at", "updated_at"]);
        assert_eq!(
            field(Service::Company, "employees_count").map(FieldDef::nullable),
            Some(true)
        );
    }
}
