//! Topic names from a template over `{pipeline}`, `{database}`, `{schema}` and `{table}`.
//! `{schema}` is the database for sources without schemas. Characters Kafka does not allow in
//! topic names become `_`.
//!
//! A template separates tables when it names `{table}` and the table's namespace: `{schema}`,
//! or `{database}` for sources without schemas (MySQL, DynamoDB). Otherwise one topic may hold
//! rows of several tables, and the sink puts the table into the record key
//! ([`TopicTemplate::separates_tables`]). The decision depends only on the template and the
//! source kind, so a topic's key format never changes while a pipeline runs.

use std::borrow::Cow;

use crate::envelope::ChangeEvent;

const PLACEHOLDERS: [&str; 4] = ["pipeline", "database", "schema", "table"];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicTemplate {
    template: String,
    /// The topic name, cleaned once, when the template has no placeholder.
    fixed: Option<String>,
}

impl TopicTemplate {
    /// Checks that every `{...}` is a known placeholder.
    pub fn parse(template: &str) -> Result<Self, String> {
        let mut rest = template;
        while let Some(open) = rest.find('{') {
            let close = rest[open..].find('}').ok_or("unclosed `{`")? + open;
            let name = &rest[open + 1..close];
            if !PLACEHOLDERS.contains(&name) {
                return Err(format!("unknown placeholder {{{name}}}; use {{pipeline}}, {{database}}, {{schema}} or {{table}}"));
            }
            rest = &rest[close + 1..];
        }
        if template.is_empty() {
            return Err("must not be empty".into());
        }
        let fixed = (!template.contains('{')).then(|| clean(template));
        Ok(TopicTemplate {
            template: template.to_owned(),
            fixed,
        })
    }

    pub fn topic_for(&self, event: &ChangeEvent) -> Cow<'_, str> {
        if let Some(topic) = &self.fixed {
            return Cow::Borrowed(topic);
        }
        let source = &event.source;
        let name = self
            .template
            .replace("{pipeline}", &source.pipeline)
            .replace("{database}", &source.database)
            .replace(
                "{schema}",
                source.schema.as_deref().unwrap_or(&source.database),
            )
            .replace("{table}", &source.table);
        Cow::Owned(clean(&name))
    }

    /// Whether `a` and `b` go to the same topic for certain without building its name: a fixed
    /// name, or the same pipeline, database, schema and table (the template's only inputs).
    pub fn same_topic(&self, a: &ChangeEvent, b: &ChangeEvent) -> bool {
        let (a, b) = (&a.source, &b.source);
        self.fixed.is_some()
            || (a.table == b.table
                && a.schema == b.schema
                && a.database == b.database
                && a.pipeline == b.pipeline)
    }

    /// Whether every table of `event`'s source gets a topic of its own (up to names that only
    /// differ in characters Kafka forbids, which all become `_`).
    pub fn separates_tables(&self, event: &ChangeEvent) -> bool {
        let has = |placeholder: &str| self.template.contains(placeholder);
        has("{table}") && (has("{schema}") || (has("{database}") && event.source.schema.is_none()))
    }

    /// The topic name when the template has no placeholder.
    pub fn fixed(&self) -> Option<&str> {
        self.fixed.as_deref()
    }
}

/// `name` as Kafka accepts it: forbidden characters become `_`, at most 249 of them.
fn clean(name: &str) -> String {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    name.chars()
        .map(|c| if allowed(c) { c } else { '_' })
        .take(249)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::generator::{GeneratorConfig, GeneratorSource};

    #[test]
    fn fills_placeholders_and_cleans_names() {
        let config: GeneratorConfig = toml::from_str("").unwrap();
        let event = GeneratorSource::new(config).event(
            &"shop".into(),
            &"app db".into(),
            &"orders".into(),
            1,
        );
        assert_eq!(
            TopicTemplate::parse("{pipeline}.{schema}.{table}")
                .unwrap()
                .topic_for(&event),
            "shop.app_db.orders"
        );
        assert!(TopicTemplate::parse("cdc.{tabel}")
            .unwrap_err()
            .contains("unknown placeholder {tabel}"));
        assert!(TopicTemplate::parse("cdc.{table").is_err());
        assert_eq!(
            TopicTemplate::parse("fixed").unwrap().fixed(),
            Some("fixed")
        );
        // A fixed name is cleaned like any other.
        assert_eq!(
            TopicTemplate::parse("my topic").unwrap().topic_for(&event),
            "my_topic"
        );
        assert_eq!(
            TopicTemplate::parse("cdc.orders")
                .unwrap()
                .topic_for(&event),
            "cdc.orders"
        );
    }

    #[test]
    fn events_share_a_topic_when_the_templates_inputs_are_the_same() {
        let config: GeneratorConfig = toml::from_str("").unwrap();
        let event =
            GeneratorSource::new(config).event(&"shop".into(), &"app".into(), &"orders".into(), 1);
        let template = TopicTemplate::parse("{pipeline}.{schema}.{table}").unwrap();
        let mut other = event.clone();
        other.source.position = crate::envelope::SourcePosition::Generator { seq: 99 };
        assert!(template.same_topic(&event, &other));
        other.source.table = "items".into();
        assert!(!template.same_topic(&event, &other));
        other = event.clone();
        other.source.schema = Some("public".into());
        assert!(!template.same_topic(&event, &other));
        other = event.clone();
        other.source.database = "other".into();
        assert!(!template.same_topic(&event, &other));
        other.source.pipeline = "other".into();
        other.source.table = "items".into();
        assert!(!template.same_topic(&event, &other));
        assert!(TopicTemplate::parse("all")
            .unwrap()
            .same_topic(&event, &other));
    }

    #[test]
    fn tables_are_separated_only_by_table_and_namespace() {
        let config: GeneratorConfig = toml::from_str("").unwrap();
        let schemaless =
            GeneratorSource::new(config).event(&"shop".into(), &"app".into(), &"orders".into(), 1);
        let mut with_schema = schemaless.clone();
        with_schema.source.schema = Some("public".into());
        let separates = |template: &str, event: &ChangeEvent| {
            TopicTemplate::parse(template)
                .unwrap()
                .separates_tables(event)
        };
        for event in [&schemaless, &with_schema] {
            assert!(separates("{pipeline}.{schema}.{table}", event));
            assert!(!separates("{pipeline}.{schema}", event));
            assert!(!separates("{pipeline}.{table}", event));
            assert!(!separates("all-changes", event));
        }
        // `{database}` names the table's namespace only where there are no schemas.
        assert!(separates("{pipeline}.{database}.{table}", &schemaless));
        assert!(!separates("{pipeline}.{database}.{table}", &with_schema));
    }
}
