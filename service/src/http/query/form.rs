//! The query protocol's form encoding, decoded by the shape of each action's input.
//!
//! botocore and the AWS SDKs flatten an input into `Name=value` pairs: a structure's members
//! as `Parent.Child`, a list as `List.<item>.<n>` counted from 1, where `<item>` is the list's
//! `locationName` in the model (`Tags.Tag.1.Key`, `Filters.Filter.1.Values.Value.2`) or
//! `member` (`TagKeys.member.1`), and an empty list as `List=`. [`decode`] reads the pairs
//! back into a JSON value shaped like the REST API's body (numbers as numbers, booleans as
//! booleans), so that the same serde input types, and so the same operations, serve both
//! front doors. Members of the RDS model that Backtrack does not model are accepted and
//! dropped; any other name is refused, so a typo is never ignored.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::error::ApiError;

/// The type of an input member, as the RDS model has it.
#[derive(Debug)]
pub enum Shape {
    Str,
    Int,
    Bool,
    /// A list whose items are `<item>.<n>`.
    List(&'static str, &'static Shape),
    Struct(&'static [(&'static str, Shape)]),
}

/// An action's input: the members decoded, and the model's members accepted and dropped.
pub struct Input {
    pub members: &'static [(&'static str, Shape)],
    pub ignored: &'static [&'static str],
}

pub const TAG: Shape = Shape::Struct(&[("Key", Shape::Str), ("Value", Shape::Str)]);
pub const TAGS: Shape = Shape::List("Tag", &TAG);
pub const FILTER: Shape = Shape::Struct(&[
    ("Name", Shape::Str),
    ("Values", Shape::List("Value", &Shape::Str)),
]);
pub const FILTERS: Shape = Shape::List("Filter", &FILTER);

/// One name of the form and what is under it: `Tags` holds `Tag`, which holds `1`, `2`, ...
#[derive(Debug, Default)]
struct Node {
    value: Option<String>,
    children: BTreeMap<String, Node>,
}

/// The form's pairs as a tree of dotted names. A name given twice is refused.
fn tree<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<Node, ApiError> {
    let mut root = Node::default();
    for (name, value) in pairs {
        let mut node = &mut root;
        for part in name.split('.') {
            node = node.children.entry(part.to_string()).or_default();
        }
        if node.value.replace(value.to_string()).is_some() {
            return Err(ApiError::InvalidParameterValue(format!(
                "The parameter {name} is given more than once."
            )));
        }
    }
    Ok(root)
}

/// Decodes `pairs` (without `Action` and `Version`) as `input`.
pub fn decode<'a>(
    action: &str,
    input: &Input,
    pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Result<Map<String, Value>, ApiError> {
    let root = tree(pairs)?;
    let mut out = Map::new();
    for (name, node) in &root.children {
        if input.ignored.contains(&name.as_str()) {
            continue;
        }
        let Some((_, shape)) = input.members.iter().find(|(member, _)| member == name) else {
            return Err(ApiError::InvalidParameterValue(format!(
                "{action} has no parameter {name} (or Backtrack does not support it)."
            )));
        };
        out.insert(name.clone(), value(node, shape, name)?);
    }
    Ok(out)
}

fn value(node: &Node, shape: &Shape, path: &str) -> Result<Value, ApiError> {
    let invalid = |why: &str| ApiError::InvalidParameterValue(format!("{path}: {why}"));
    match shape {
        Shape::Str | Shape::Int | Shape::Bool => {
            if !node.children.is_empty() {
                return Err(invalid("takes a single value, not members"));
            }
            let text = node.value.as_deref().unwrap_or_default();
            match shape {
                Shape::Int => text
                    .trim()
                    .parse::<i64>()
                    .map(Value::from)
                    .map_err(|_| invalid(&format!("{text:?} is not an integer"))),
                Shape::Bool => match text.to_ascii_lowercase().as_str() {
                    "true" => Ok(Value::Bool(true)),
                    "false" => Ok(Value::Bool(false)),
                    _ => Err(invalid(&format!("{text:?} is not true or false"))),
                },
                _ => Ok(Value::String(text.to_string())),
            }
        }
        Shape::List(item, inner) => {
            if node.value.as_deref().is_some_and(|v| !v.is_empty()) {
                return Err(invalid(&format!(
                    "is a list: give its items as {path}.{item}.1, {path}.{item}.2, ..."
                )));
            }
            let mut items = Vec::new();
            for (name, child) in &node.children {
                if name != item {
                    return Err(invalid(&format!("has items named {item}, not {name}")));
                }
                if child.value.is_some() {
                    return Err(invalid(&format!("{item} needs a number: {path}.{item}.1")));
                }
                for (n, entry) in &child.children {
                    let index = n.parse::<u32>().ok().filter(|i| *i >= 1).ok_or_else(|| {
                        invalid(&format!("{n:?} is not an item number (1, 2, ...)"))
                    })?;
                    items.push((index, value(entry, inner, &format!("{path}.{item}.{n}"))?));
                }
            }
            items.sort_by_key(|(index, _)| *index);
            Ok(Value::Array(items.into_iter().map(|(_, v)| v).collect()))
        }
        Shape::Struct(members) => {
            if node.value.as_deref().is_some_and(|v| !v.is_empty()) {
                return Err(invalid("is a structure: give its members as its own names"));
            }
            let mut out = Map::new();
            for (name, child) in &node.children {
                let Some((_, shape)) = members.iter().find(|(member, _)| member == name) else {
                    return Err(invalid(&format!("has no member {name}")));
                };
                out.insert(
                    name.clone(),
                    value(child, shape, &format!("{path}.{name}"))?,
                );
            }
            Ok(Value::Object(out))
        }
    }
}

/// Turns the `Filters` of a decoded listing into the REST API's query parameters: each
/// filter's name with its values, and every other member as a one-item list.
pub fn listing_params(mut decoded: Map<String, Value>) -> Result<Map<String, Value>, ApiError> {
    let filters = decoded.remove("Filters");
    let mut out: Map<String, Value> = decoded
        .into_iter()
        .map(|(name, v)| {
            let values = match v {
                Value::Array(items) => items.into_iter().map(scalar_text).collect(),
                one => vec![scalar_text(one)],
            };
            (name, Value::Array(values))
        })
        .collect();
    for filter in filters
        .and_then(|f| f.as_array().cloned())
        .unwrap_or_default()
    {
        let name = filter
            .get("Name")
            .and_then(Value::as_str)
            .ok_or_else(|| ApiError::MissingParameter("A filter needs a Name.".into()))?;
        // Filter names are lower case (`db-cluster-id`); members are not, so a filter can
        // never pass for one.
        if name.is_empty() || name.chars().any(|c| c.is_ascii_uppercase()) {
            return Err(ApiError::InvalidParameterValue(format!(
                "Unrecognized filter name: {name:?}."
            )));
        }
        let values = filter
            .get("Values")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        if let Some(Value::Array(existing)) = out.get_mut(name) {
            existing.extend(values);
        } else {
            out.insert(name.to_string(), Value::Array(values));
        }
    }
    Ok(out)
}

fn scalar_text(v: Value) -> Value {
    match v {
        Value::String(s) => Value::String(s),
        other => Value::String(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    static SAMPLE: Input = Input {
        members: &[
            ("DBClusterIdentifier", Shape::Str),
            ("BacktrackWindow", Shape::Int),
            ("DeletionProtection", Shape::Bool),
            ("Tags", TAGS),
            ("Filters", FILTERS),
            ("EventCategories", Shape::List("EventCategory", &Shape::Str)),
            ("TagKeys", Shape::List("member", &Shape::Str)),
        ],
        ignored: &["VpcSecurityGroupIds", "SkipFinalSnapshot"],
    };

    fn decoded(form: &str) -> Result<Value, ApiError> {
        let pairs: Vec<(String, String)> = form_urlencoded::parse(form.as_bytes())
            .into_owned()
            .collect();
        decode(
            "Sample",
            &SAMPLE,
            pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        )
        .map(Value::Object)
    }

    #[test]
    fn scalars_are_typed_by_the_model() {
        assert_eq!(
            decoded("DBClusterIdentifier=c1&BacktrackWindow=86400&DeletionProtection=true")
                .unwrap(),
            json!({"DBClusterIdentifier": "c1", "BacktrackWindow": 86400, "DeletionProtection": true})
        );
        assert!(decoded("BacktrackWindow=lots").is_err());
        assert!(decoded("DeletionProtection=yes").is_err());
    }

    #[test]
    fn lists_of_structures_are_read_in_item_order() {
        assert_eq!(
            decoded("Tags.Tag.2.Key=b&Tags.Tag.1.Key=a&Tags.Tag.1.Value=1&Tags.Tag.2.Value=2")
                .unwrap(),
            json!({"Tags": [{"Key": "a", "Value": "1"}, {"Key": "b", "Value": "2"}]})
        );
        // Ten sorts after nine, not after one.
        let many: String = (1..=10)
            .map(|i| format!("TagKeys.member.{i}=k{i}&"))
            .collect();
        let keys = decoded(&many).unwrap()["TagKeys"].clone();
        assert_eq!(keys[9], json!("k10"));
    }

    #[test]
    fn nested_lists_and_empty_lists_decode() {
        assert_eq!(
            decoded(
                "Filters.Filter.1.Name=db-cluster-backtrack-status\
                 &Filters.Filter.1.Values.Value.1=applying\
                 &Filters.Filter.1.Values.Value.2=completed\
                 &EventCategories.EventCategory.1=backtrack&TagKeys="
            )
            .unwrap(),
            json!({
                "Filters": [{"Name": "db-cluster-backtrack-status", "Values": ["applying", "completed"]}],
                "EventCategories": ["backtrack"],
                "TagKeys": []
            })
        );
    }

    #[test]
    fn model_members_we_do_not_keep_are_accepted_and_strangers_refused() {
        assert_eq!(
            decoded("VpcSecurityGroupIds.VpcSecurityGroupId.1=sg-1&SkipFinalSnapshot=true")
                .unwrap(),
            json!({})
        );
        for bad in [
            "DBClusterIdentifer=c1",
            "Tags.member.1.Key=a",
            "Tags.Tag.0.Key=a",
            "Tags.Tag.x.Key=a",
            "Tags.Tag.1.Colour=red",
            "Tags=oops",
            "DBClusterIdentifier=a&DBClusterIdentifier=b",
            "DBClusterIdentifier.x=a",
        ] {
            assert!(
                matches!(decoded(bad), Err(ApiError::InvalidParameterValue(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn filters_become_the_rest_apis_parameters() {
        let Value::Object(decoded) = decoded(
            "DBClusterIdentifier=c1&Filters.Filter.1.Name=engine&Filters.Filter.1.Values.Value.1=aurora-mysql\
             &Filters.Filter.2.Name=engine&Filters.Filter.2.Values.Value.1=x",
        )
        .unwrap() else {
            unreachable!()
        };
        assert_eq!(
            Value::Object(listing_params(decoded).unwrap()),
            json!({"DBClusterIdentifier": ["c1"], "engine": ["aurora-mysql", "x"]})
        );
    }
}
