//! The query protocol's XML, as RDS writes it (reference/rds-api.md §2.2–2.4):
//! `<{Op}Response xmlns=…><{Op}Result>…</{Op}Result><ResponseMetadata>…` with the result
//! first (the Rust SDK reads it as the first child), list items named by the model's
//! `locationName` (the Rust SDK drops children with any other name), absent members left out,
//! and errors as `<ErrorResponse><Error><Type/><Code/><Message/></Error><RequestId/>`.
//!
//! A result is written from the same JSON value the REST API answers with, so both front
//! doors show the same members with the same values (timestamps are already RDS's
//! millisecond UTC form); the one thing XML adds is the name of each list's items.

use std::io;

use quick_xml::events::BytesText;
use quick_xml::Writer;
use serde_json::{Map, Value};

use crate::error::ApiError;

pub const NAMESPACE: &str = "http://rds.amazonaws.com/doc/2014-10-31/";

/// The element name of a list's items, from the RDS model: `<DBClusters><DBCluster>`.
fn item_name(list: &str) -> &'static str {
    match list {
        "DBClusters" => "DBCluster",
        "DBClusterBacktracks" => "DBClusterBacktrack",
        "Events" => "Event",
        "EventCategories" => "EventCategory",
        "EventCategoriesMapList" => "EventCategoriesMap",
        "TagList" => "Tag",
        "DBClusterMembers" => "DBClusterMember",
        "VpcSecurityGroups" => "VpcSecurityGroupMembership",
        "AvailabilityZones" => "AvailabilityZone",
        _ => "member",
    }
}

/// Members the REST API adds that RDS's shapes do not have.
const NOT_IN_THE_MODEL: [&str; 2] = ["EventId", "StatusReason"];

/// A successful reply to `action`, its result holding `result`'s members.
pub fn response(action: &str, result: &Map<String, Value>, request_id: &str) -> Vec<u8> {
    document(|w| {
        w.create_element(format!("{action}Response"))
            .with_attribute(("xmlns", NAMESPACE))
            .write_inner_content(|w| {
                w.create_element(format!("{action}Result"))
                    .write_inner_content(|w| members(w, result))?;
                w.create_element("ResponseMetadata")
                    .write_inner_content(|w| {
                        w.create_element("RequestId")
                            .write_text_content(BytesText::new(request_id))?;
                        Ok(())
                    })?;
                Ok(())
            })?;
        Ok(())
    })
}

/// An error reply, with the code and fault type of RDS's error table
/// ([`ApiError::parts`]).
pub fn error(error: &ApiError, request_id: &str) -> Vec<u8> {
    let (code, _, kind) = error.parts();
    document(|w| {
        w.create_element("ErrorResponse")
            .with_attribute(("xmlns", NAMESPACE))
            .write_inner_content(|w| {
                w.create_element("Error").write_inner_content(|w| {
                    for (name, text) in [
                        ("Type", kind),
                        ("Code", code),
                        ("Message", &error.message()),
                    ] {
                        w.create_element(name)
                            .write_text_content(BytesText::new(text))?;
                    }
                    Ok(())
                })?;
                w.create_element("RequestId")
                    .write_text_content(BytesText::new(request_id))?;
                Ok(())
            })?;
        Ok(())
    })
}

fn document(write: impl FnOnce(&mut Writer<Vec<u8>>) -> io::Result<()>) -> Vec<u8> {
    let mut writer = Writer::new(Vec::with_capacity(1024));
    // Writing into memory cannot fail; an error here would leave a truncated document,
    // which every client reports as invalid XML.
    if let Err(e) = write(&mut writer) {
        tracing::error!(error = %e, "cannot write an XML reply");
    }
    writer.into_inner()
}

fn members(w: &mut Writer<Vec<u8>>, object: &Map<String, Value>) -> io::Result<()> {
    for (name, value) in object {
        if !NOT_IN_THE_MODEL.contains(&name.as_str()) {
            element(w, name, value)?;
        }
    }
    Ok(())
}

fn element(w: &mut Writer<Vec<u8>>, name: &str, value: &Value) -> io::Result<()> {
    let text = match value {
        Value::Null => return Ok(()),
        Value::Object(object) => {
            w.create_element(name)
                .write_inner_content(|w| members(w, object))?;
            return Ok(());
        }
        Value::Array(items) if items.is_empty() => {
            w.create_element(name).write_empty()?;
            return Ok(());
        }
        Value::Array(items) => {
            let item = item_name(name);
            w.create_element(name)
                .write_inner_content(|w| items.iter().try_for_each(|v| element(w, item, v)))?;
            return Ok(());
        }
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
    };
    w.create_element(name)
        .write_text_content(BytesText::new(&text))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use serde_json::json;

    #[derive(Debug, Deserialize)]
    struct DescribeResponse {
        #[serde(rename = "DescribeDBClustersResult")]
        result: DescribeResult,
        #[serde(rename = "ResponseMetadata")]
        metadata: Metadata,
    }
    #[derive(Debug, Deserialize)]
    struct DescribeResult {
        #[serde(rename = "DBClusters")]
        clusters: Clusters,
        #[serde(rename = "Marker")]
        marker: Option<String>,
    }
    #[derive(Debug, Deserialize)]
    struct Clusters {
        #[serde(rename = "DBCluster", default)]
        items: Vec<Cluster>,
    }
    #[derive(Debug, Deserialize)]
    struct Cluster {
        #[serde(rename = "DBClusterIdentifier")]
        id: String,
        #[serde(rename = "BacktrackWindow")]
        window: Option<u64>,
        #[serde(rename = "DeletionProtection")]
        protected: bool,
        #[serde(rename = "TagList")]
        tags: TagList,
    }
    #[derive(Debug, Deserialize)]
    struct TagList {
        #[serde(rename = "Tag", default)]
        items: Vec<Tag>,
    }
    #[derive(Debug, Deserialize)]
    struct Tag {
        #[serde(rename = "Key")]
        key: String,
        #[serde(rename = "Value")]
        value: String,
    }
    #[derive(Debug, Deserialize)]
    struct Metadata {
        #[serde(rename = "RequestId")]
        request_id: String,
    }

    fn text(bytes: Vec<u8>) -> String {
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn a_result_parses_back_with_its_lists_items_and_values() {
        let result = json!({
            "DBClusters": [
                {"DBClusterIdentifier": "a", "BacktrackWindow": 3600, "DeletionProtection": true,
                 "TagList": [{"Key": "team", "Value": "<db & co>"}]},
                {"DBClusterIdentifier": "b", "DeletionProtection": false, "TagList": [],
                 "EarliestBacktrackTime": null}
            ],
            "Marker": "m1"
        });
        let xml = text(response(
            "DescribeDBClusters",
            result.as_object().unwrap(),
            "rid-1",
        ));
        assert!(xml.starts_with(&format!(
            "<DescribeDBClustersResponse xmlns=\"{NAMESPACE}\"><DescribeDBClustersResult>"
        )));
        assert!(xml.contains("<TagList/>") && !xml.contains("EarliestBacktrackTime"));
        let parsed: DescribeResponse = quick_xml::de::from_str(&xml).unwrap();
        assert_eq!(parsed.metadata.request_id, "rid-1");
        assert_eq!(parsed.result.marker.as_deref(), Some("m1"));
        let [a, b] = &parsed.result.clusters.items[..] else {
            panic!("two clusters expected: {xml}")
        };
        assert_eq!(
            (a.id.as_str(), a.window, a.protected),
            ("a", Some(3600), true)
        );
        assert_eq!(a.tags.items[0].key, "team");
        assert_eq!(a.tags.items[0].value, "<db & co>");
        assert_eq!((b.id.as_str(), b.window, b.protected), ("b", None, false));
        assert!(b.tags.items.is_empty());
    }

    #[test]
    fn members_outside_the_rds_model_are_left_out() {
        let xml = text(response(
            "DescribeEvents",
            json!({"Events": [{"Message": "m", "EventId": "RDS-EVENT-0131",
                               "EventCategories": ["backtrack"]}]})
            .as_object()
            .unwrap(),
            "r",
        ));
        assert!(xml.contains("<Events><Event><EventCategories><EventCategory>backtrack</EventCategory></EventCategories><Message>m</Message></Event></Events>"), "{xml}");
        assert!(!xml.contains("EventId"));
    }

    #[derive(Debug, Deserialize)]
    struct ErrorResponse {
        #[serde(rename = "Error")]
        error: ErrorDetail,
        #[serde(rename = "RequestId")]
        request_id: String,
    }
    #[derive(Debug, Deserialize)]
    struct ErrorDetail {
        #[serde(rename = "Type")]
        kind: String,
        #[serde(rename = "Code")]
        code: String,
        #[serde(rename = "Message")]
        message: String,
    }

    #[test]
    fn an_error_carries_the_tables_code_and_fault() {
        let xml = text(error(&ApiError::ClusterNotFound("nosuch".into()), "rid"));
        assert!(xml.starts_with("<ErrorResponse xmlns="));
        let parsed: ErrorResponse = quick_xml::de::from_str(&xml).unwrap();
        assert_eq!(parsed.error.kind, "Sender");
        assert_eq!(parsed.error.code, "DBClusterNotFoundFault");
        assert_eq!(parsed.error.message, "DBCluster nosuch not found.");
        assert_eq!(parsed.request_id, "rid");
        let internal = text(error(&ApiError::Internal("secret".into()), "r"));
        assert!(internal.contains("<Type>Receiver</Type>") && !internal.contains("secret"));
    }
}
