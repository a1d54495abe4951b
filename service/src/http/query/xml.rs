//! The query protocol's XML, as RDS writes it (reference/rds-api.md §2.2–2.4):
//! `<{Op}Response xmlns=…><{Op}Result>…</{Op}Result><ResponseMetadata>…` with the result
//! first (the Rust SDK reads it as the first child), list items named by the model's
//! `locationName` (the Rust SDK drops children with any other name), absent members left out,
//! and errors as `<ErrorResponse><Error><Type/><Code/><Message/></Error><RequestId/>`.
//!
//! A result is written by serde from the same output types the REST API answers with, so both
//! front doors show the same members with the same values (timestamps are already RDS's
//! millisecond UTC form). [`Xml`] is a serde `Serializer`: a struct's fields become elements,
//! `None` is left out, and a list becomes a wrapper element whose items take the model's item
//! name ([`item_name`]); quick-xml escapes the text.

use std::fmt::{self, Display, Write as _};

use quick_xml::escape::escape;
use serde::ser::{self, Serialize};

use crate::error::ApiError;

pub const NAMESPACE: &str = "http://rds.amazonaws.com/doc/2014-10-31/";

/// The element name of a list's items, from the RDS model: `<DBClusters><DBCluster>`.
pub fn item_name(list: &str) -> &'static str {
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
pub fn response(
    action: &str,
    result: &impl Serialize,
    request_id: &str,
) -> Result<Vec<u8>, ApiError> {
    let mut out = String::with_capacity(4096);
    let _ = write!(
        out,
        "<{action}Response xmlns=\"{NAMESPACE}\"><{action}Result>"
    );
    result
        .serialize(Xml {
            out: &mut out,
            name: None,
        })
        .map_err(|e| ApiError::Internal(format!("cannot write the {action} reply as XML: {e}")))?;
    let _ = write!(
        out,
        "</{action}Result><ResponseMetadata><RequestId>{}</RequestId></ResponseMetadata></{action}Response>",
        escape(request_id)
    );
    Ok(out.into_bytes())
}

/// An error reply, with the code and fault type of RDS's error table
/// ([`ApiError::parts`]).
pub fn error(error: &ApiError, request_id: &str) -> Vec<u8> {
    let (code, _, kind) = error.parts();
    format!(
        "<ErrorResponse xmlns=\"{NAMESPACE}\"><Error><Type>{kind}</Type><Code>{code}</Code>\
         <Message>{}</Message></Error><RequestId>{}</RequestId></ErrorResponse>",
        escape(error.message()),
        escape(request_id)
    )
    .into_bytes()
}

#[derive(Debug)]
pub struct XmlError(String);

impl Display for XmlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for XmlError {}

impl ser::Error for XmlError {
    fn custom<T: Display>(msg: T) -> Self {
        XmlError(msg.to_string())
    }
}

/// Writes a value as the element `name`, or, without a name (a result), as its members.
pub struct Xml<'a> {
    out: &'a mut String,
    name: Option<&'a str>,
}

impl Xml<'_> {
    fn text(self, text: impl Display) -> Result<(), XmlError> {
        let name = self
            .name
            .ok_or_else(|| XmlError("a result must be a structure, not a single value".into()))?;
        let _ = write!(self.out, "<{name}>{text}</{name}>");
        Ok(())
    }

    fn open(&mut self) {
        if let Some(name) = self.name {
            let _ = write!(self.out, "<{name}>");
        }
    }
}

/// A struct's or a map's members, then its closing tag.
pub struct Members<'a> {
    out: &'a mut String,
    name: Option<&'a str>,
    key: Option<String>,
}

impl Members<'_> {
    fn member<T: Serialize + ?Sized>(&mut self, key: &str, value: &T) -> Result<(), XmlError> {
        if NOT_IN_THE_MODEL.contains(&key) {
            return Ok(());
        }
        value.serialize(Xml {
            out: self.out,
            name: Some(key),
        })
    }

    fn close(self) -> Result<(), XmlError> {
        if let Some(name) = self.name {
            let _ = write!(self.out, "</{name}>");
        }
        Ok(())
    }
}

/// A list's items; an empty list is written `<Name/>`.
pub struct Items<'a> {
    out: &'a mut String,
    name: &'a str,
    start: usize,
    count: usize,
}

impl ser::SerializeSeq for Items<'_> {
    type Ok = ();
    type Error = XmlError;

    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), XmlError> {
        self.count += 1;
        value.serialize(Xml {
            out: self.out,
            name: Some(item_name(self.name)),
        })
    }

    fn end(self) -> Result<(), XmlError> {
        if self.count == 0 {
            self.out.truncate(self.start);
            let _ = write!(self.out, "<{}/>", self.name);
        } else {
            let _ = write!(self.out, "</{}>", self.name);
        }
        Ok(())
    }
}

impl ser::SerializeStruct for Members<'_> {
    type Ok = ();
    type Error = XmlError;

    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), XmlError> {
        self.member(key, value)
    }

    fn end(self) -> Result<(), XmlError> {
        self.close()
    }
}

impl ser::SerializeMap for Members<'_> {
    type Ok = ();
    type Error = XmlError;

    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), XmlError> {
        let key = serde_json::to_value(key).map_err(|e| XmlError(e.to_string()))?;
        match key {
            serde_json::Value::String(key) => {
                self.key = Some(key);
                Ok(())
            }
            other => Err(XmlError(format!("a member name must be text, not {other}"))),
        }
    }

    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), XmlError> {
        let key = self.key.take().unwrap_or_default();
        self.member(&key, value)
    }

    fn end(self) -> Result<(), XmlError> {
        self.close()
    }
}

/// What XML cannot hold (tuples, enums with data) is refused.
pub struct Refused;

macro_rules! refuse {
    ($trait:ident, $method:ident $(, $key:ident)?) => {
        impl ser::$trait for Refused {
            type Ok = ();
            type Error = XmlError;
            fn $method<T: Serialize + ?Sized>(&mut self, $($key: &'static str,)? _: &T) -> Result<(), XmlError> {
                Err(XmlError("not representable in XML".into()))
            }
            fn end(self) -> Result<(), XmlError> {
                Ok(())
            }
        }
    };
}
refuse!(SerializeTuple, serialize_element);
refuse!(SerializeTupleStruct, serialize_field);
refuse!(SerializeTupleVariant, serialize_field);
refuse!(SerializeStructVariant, serialize_field, _key);

fn refused<T>() -> Result<T, XmlError> {
    Err(XmlError("not representable in XML".into()))
}

impl<'a> ser::Serializer for Xml<'a> {
    type Ok = ();
    type Error = XmlError;
    type SerializeSeq = Items<'a>;
    type SerializeTuple = Refused;
    type SerializeTupleStruct = Refused;
    type SerializeTupleVariant = Refused;
    type SerializeMap = Members<'a>;
    type SerializeStruct = Members<'a>;
    type SerializeStructVariant = Refused;

    fn serialize_bool(self, v: bool) -> Result<(), XmlError> {
        self.text(v)
    }
    fn serialize_i8(self, v: i8) -> Result<(), XmlError> {
        self.text(v)
    }
    fn serialize_i16(self, v: i16) -> Result<(), XmlError> {
        self.text(v)
    }
    fn serialize_i32(self, v: i32) -> Result<(), XmlError> {
        self.text(v)
    }
    fn serialize_i64(self, v: i64) -> Result<(), XmlError> {
        self.text(v)
    }
    fn serialize_u8(self, v: u8) -> Result<(), XmlError> {
        self.text(v)
    }
    fn serialize_u16(self, v: u16) -> Result<(), XmlError> {
        self.text(v)
    }
    fn serialize_u32(self, v: u32) -> Result<(), XmlError> {
        self.text(v)
    }
    fn serialize_u64(self, v: u64) -> Result<(), XmlError> {
        self.text(v)
    }
    fn serialize_f32(self, v: f32) -> Result<(), XmlError> {
        self.text(v)
    }
    fn serialize_f64(self, v: f64) -> Result<(), XmlError> {
        self.text(v)
    }
    fn serialize_char(self, v: char) -> Result<(), XmlError> {
        self.text(escape(&*v.encode_utf8(&mut [0; 4])))
    }
    fn serialize_str(self, v: &str) -> Result<(), XmlError> {
        self.text(escape(v))
    }
    fn collect_str<T: Display + ?Sized>(self, v: &T) -> Result<(), XmlError> {
        self.text(escape(v.to_string()))
    }
    fn serialize_bytes(self, _: &[u8]) -> Result<(), XmlError> {
        refused()
    }
    fn serialize_none(self) -> Result<(), XmlError> {
        Ok(())
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), XmlError> {
        value.serialize(self)
    }
    /// A JSON `null` is an absent member, as `None` is.
    fn serialize_unit(self) -> Result<(), XmlError> {
        Ok(())
    }
    fn serialize_unit_struct(self, _: &'static str) -> Result<(), XmlError> {
        self.serialize_unit()
    }
    fn serialize_unit_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
    ) -> Result<(), XmlError> {
        self.text(escape(variant))
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        value: &T,
    ) -> Result<(), XmlError> {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Result<(), XmlError> {
        refused()
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Items<'a>, XmlError> {
        let name = self
            .name
            .ok_or_else(|| XmlError("a result must be a structure, not a list".into()))?;
        let start = self.out.len();
        let _ = write!(self.out, "<{name}>");
        Ok(Items {
            out: self.out,
            name,
            start,
            count: 0,
        })
    }
    fn serialize_tuple(self, _: usize) -> Result<Refused, XmlError> {
        refused()
    }
    fn serialize_tuple_struct(self, _: &'static str, _: usize) -> Result<Refused, XmlError> {
        refused()
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Refused, XmlError> {
        refused()
    }
    fn serialize_map(mut self, _: Option<usize>) -> Result<Members<'a>, XmlError> {
        self.open();
        Ok(Members {
            out: self.out,
            name: self.name,
            key: None,
        })
    }
    fn serialize_struct(mut self, _: &'static str, _: usize) -> Result<Members<'a>, XmlError> {
        self.open();
        Ok(Members {
            out: self.out,
            name: self.name,
            key: None,
        })
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Refused, XmlError> {
        refused()
    }
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
        let xml = text(response("DescribeDBClusters", &result, "rid-1").unwrap());
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
    fn the_operations_own_types_are_written_in_field_order_without_absent_members() {
        use crate::ops::backtracks::DbClusterBacktrack;
        let backtrack: DbClusterBacktrack = serde_json::from_value(json!({
            "DBClusterIdentifier": "shop",
            "BacktrackIdentifier": "b-1",
            "BacktrackTo": "2026-11-23T10:15:30.123Z",
            "BacktrackedFrom": "2026-11-23T11:00:00.000Z",
            "BacktrackRequestCreationTime": "2026-11-23T11:00:00.000Z",
            "Status": "failed",
            "StatusReason": "the node said no"
        }))
        .unwrap();
        let xml = text(response("BacktrackDBCluster", &backtrack, "r").unwrap());
        assert!(
            xml.contains(
                "<BacktrackDBClusterResult><DBClusterIdentifier>shop</DBClusterIdentifier>\
             <BacktrackIdentifier>b-1</BacktrackIdentifier>\
             <BacktrackTo>2026-11-23T10:15:30.123Z</BacktrackTo>"
            ),
            "{xml}"
        );
        assert!(!xml.contains("StatusReason"), "{xml}");
        // An empty result is an empty element, which botocore needs to find.
        let empty = text(response("AddTagsToResource", &json!({}), "r").unwrap());
        assert!(empty.contains("<AddTagsToResourceResult></AddTagsToResourceResult>"));
        assert!(response("X", &42, "r").is_err());
    }

    #[test]
    fn members_outside_the_rds_model_are_left_out() {
        let xml = text(
            response(
                "DescribeEvents",
                &json!({"Events": [{"Message": "m", "EventId": "RDS-EVENT-0131",
                                    "EventCategories": ["backtrack"]}]}),
                "r",
            )
            .unwrap(),
        );
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
        let xml = text(error(&ApiError::ClusterNotFound("no<such".into()), "rid"));
        assert!(xml.starts_with("<ErrorResponse xmlns="));
        let parsed: ErrorResponse = quick_xml::de::from_str(&xml).unwrap();
        assert_eq!(parsed.error.kind, "Sender");
        assert_eq!(parsed.error.code, "DBClusterNotFoundFault");
        assert_eq!(parsed.error.message, "DBCluster no<such not found.");
        assert_eq!(parsed.request_id, "rid");
        let internal = text(error(&ApiError::Internal("secret".into()), "r"));
        assert!(internal.contains("<Type>Receiver</Type>") && !internal.contains("secret"));
    }
}
