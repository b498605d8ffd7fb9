//! Kafka Connect schemas as the JSON converter writes them beside a payload
//! (`schemas = true`): `{"type":"struct","fields":[...],"optional":false,"name":"..."}`, keys
//! in the converter's order (type, fields or items, optional, name, version, doc, parameters,
//! default, then `field` when the schema is a struct's field).

use std::sync::Arc;

use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};

/// One Connect schema.
#[derive(Debug, Clone, PartialEq)]
pub struct Schema {
    pub kind: &'static str,
    pub fields: Vec<Schema>,
    pub items: Option<Box<Schema>>,
    pub optional: bool,
    pub name: Option<Arc<str>>,
    pub version: Option<u32>,
    pub doc: Option<&'static str>,
    pub parameters: Vec<(&'static str, String)>,
    /// The default value, where Debezium declares one (a string in every such case).
    pub default: Option<&'static str>,
    /// The field's name, when this is a field of a struct.
    pub field: Option<Arc<str>>,
}

impl Schema {
    pub fn new(kind: &'static str, optional: bool) -> Self {
        Schema {
            kind,
            fields: Vec::new(),
            items: None,
            optional,
            name: None,
            version: None,
            doc: None,
            parameters: Vec::new(),
            default: None,
            field: None,
        }
    }

    pub fn structure(name: impl Into<Arc<str>>, fields: Vec<Schema>, optional: bool) -> Self {
        Schema {
            fields,
            name: Some(name.into()),
            ..Schema::new("struct", optional)
        }
    }

    /// A logical type: `name` at `version` over `kind`.
    pub fn logical(kind: &'static str, name: &'static str, optional: bool) -> Self {
        Schema {
            name: Some(name.into()),
            version: Some(1),
            ..Schema::new(kind, optional)
        }
    }

    pub fn parameter(mut self, key: &'static str, value: impl Into<String>) -> Self {
        self.parameters.push((key, value.into()));
        self
    }

    pub fn named_field(mut self, field: impl Into<Arc<str>>) -> Self {
        self.field = Some(field.into());
        self
    }

    pub fn with_version(mut self, version: u32) -> Self {
        self.version = Some(version);
        self
    }
}

impl Serialize for Schema {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        map.serialize_entry("type", self.kind)?;
        if self.kind == "struct" {
            map.serialize_entry("fields", &self.fields)?;
        }
        if let Some(items) = &self.items {
            map.serialize_entry("items", items)?;
        }
        map.serialize_entry("optional", &self.optional)?;
        if let Some(name) = &self.name {
            map.serialize_entry("name", &**name)?;
        }
        if let Some(version) = self.version {
            map.serialize_entry("version", &version)?;
        }
        if let Some(doc) = self.doc {
            map.serialize_entry("doc", doc)?;
        }
        if !self.parameters.is_empty() {
            map.serialize_entry("parameters", &Parameters(&self.parameters))?;
        }
        if let Some(default) = self.default {
            map.serialize_entry("default", default)?;
        }
        if let Some(field) = &self.field {
            map.serialize_entry("field", &**field)?;
        }
        map.end()
    }
}

struct Parameters<'a>(&'a [(&'static str, String)]);

impl Serialize for Parameters<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (key, value) in self.0 {
            map.serialize_entry(key, value)?;
        }
        map.end()
    }
}
