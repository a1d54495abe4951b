use serde_json::Value;

use crate::helpers::*;

const COMMITTED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../openapi/openapi.json");

#[test]
fn the_committed_openapi_document_is_what_the_code_generates() {
    let generated = backtrack_service::openapi::document_json();
    let committed = std::fs::read_to_string(COMMITTED).unwrap_or_default();
    assert!(
        committed == generated,
        "openapi/openapi.json differs from what the code generates; regenerate it with\n  \
         cargo run -q -p backtrack-service -- openapi > openapi/openapi.json"
    );
}

#[test]
fn every_route_is_documented_with_its_bodies_and_errors() {
    let doc: Value = serde_json::from_str(&backtrack_service::openapi::document_json()).unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    let error_body = |path: &str| {
        if path.starts_with("/v1/") {
            "#/components/schemas/ErrorResponse"
        } else {
            "#/components/schemas/DataApiErrorBody"
        }
    };
    let routes = [
        ("post", "/Execute", "200", true),
        ("post", "/BatchExecute", "200", true),
        ("post", "/BeginTransaction", "200", true),
        ("post", "/CommitTransaction", "200", true),
        ("post", "/RollbackTransaction", "200", true),
        ("post", "/v1/clusters", "201", true),
        ("get", "/v1/clusters", "200", false),
        ("get", "/v1/clusters/{DBClusterIdentifier}", "200", false),
        ("patch", "/v1/clusters/{DBClusterIdentifier}", "200", true),
        ("delete", "/v1/clusters/{DBClusterIdentifier}", "200", false),
        (
            "post",
            "/v1/clusters/{DBClusterIdentifier}/backtracks",
            "202",
            true,
        ),
        (
            "get",
            "/v1/clusters/{DBClusterIdentifier}/backtracks",
            "200",
            false,
        ),
        (
            "get",
            "/v1/clusters/{DBClusterIdentifier}/backtracks/{BacktrackIdentifier}",
            "200",
            false,
        ),
    ];
    for (method, path, success, has_body) in routes {
        let op = &doc["paths"][path][method];
        assert!(op.is_object(), "{method} {path} is not documented");
        let ok = &op["responses"][success]["content"]["application/json"]["schema"];
        assert!(ok.is_object(), "{method} {path}: no {success} body schema");
        if has_body {
            let body = &op["requestBody"]["content"]["application/json"]["schema"];
            assert!(body.is_object(), "{method} {path}: no request body schema");
        }
        let errors: Vec<&String> = op["responses"]
            .as_object()
            .unwrap()
            .keys()
            .filter(|status| status.starts_with('4'))
            .collect();
        assert!(!errors.is_empty(), "{method} {path}: no error responses");
        for status in errors {
            let schema = &op["responses"][status]["content"]["application/json"]["schema"]["$ref"];
            assert_eq!(schema, error_body(path), "{method} {path} {status}");
        }
    }
}

#[tokio::test]
async fn the_running_service_serves_its_document_and_docs_page() {
    let app = spawn_app().await;
    let (status, served) = app.get("/openapi.json").await;
    assert_eq!(status, 200);
    let generated: Value =
        serde_json::from_str(&backtrack_service::openapi::document_json()).unwrap();
    assert_eq!(served, generated);
    let page = app
        .http
        .get(format!("{}/docs", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("/openapi.json"));
}

/// The schema at `pointer` (`/A/B`) inside `schema`, following `$ref`s and properties.
fn member<'a>(doc: &'a Value, schema: &'a Value, pointer: &str) -> Option<&'a Value> {
    let resolve = |schema: &'a Value| match schema["$ref"].as_str() {
        Some(reference) => doc.pointer(reference.strip_prefix('#')?),
        None => Some(schema),
    };
    let mut at = resolve(schema)?;
    for name in pointer.split('/').skip(1) {
        at = resolve(at["properties"].get(name)?)?;
    }
    Some(at)
}

/// Whether a link's runtime expression names a member that the source operation's request
/// or response (with `status`) really has.
fn names_a_member(doc: &Value, source: &Value, status: &str, expression: &str) -> bool {
    let json = |body: &Value| body["content"]["application/json"]["schema"].clone();
    let (schema, pointer) = if let Some(pointer) = expression.strip_prefix("$response.body#") {
        (json(&source["responses"][status]), pointer)
    } else if let Some(pointer) = expression.strip_prefix("$request.body#") {
        (json(&source["requestBody"]), pointer)
    } else {
        return false;
    };
    member(doc, &schema, pointer).is_some()
}

#[test]
fn links_name_real_operations_parameters_and_members() {
    let doc: Value = serde_json::from_str(&backtrack_service::openapi::document_json()).unwrap();
    let operations: Vec<&Value> = doc["paths"]
        .as_object()
        .unwrap()
        .values()
        .flat_map(|item| item.as_object().unwrap().values())
        .collect();
    let by_id = |id: &str| {
        operations
            .iter()
            .find(|op| op["operationId"] == id)
            .unwrap_or_else(|| panic!("no operation {id}"))
    };
    let empty = serde_json::Map::new();
    let mut links = 0;
    for source in &operations {
        let Some(responses) = source["responses"].as_object() else {
            continue;
        };
        for (status, response) in responses {
            let Some(named) = response["links"].as_object() else {
                continue;
            };
            for link in named.values() {
                let target = by_id(link["operationId"].as_str().unwrap());
                let path_parameters: std::collections::BTreeSet<&str> = target["parameters"]
                    .as_array()
                    .map(|all| {
                        all.iter()
                            .filter(|p| p["in"] == "path")
                            .map(|p| p["name"].as_str().unwrap())
                            .collect()
                    })
                    .unwrap_or_default();
                let parameters = link["parameters"].as_object().unwrap_or(&empty);
                let given: std::collections::BTreeSet<&str> =
                    parameters.keys().map(String::as_str).collect();
                assert_eq!(given, path_parameters, "{link}");
                let body = link["requestBody"].as_object().unwrap_or(&empty);
                let target_body =
                    target["requestBody"]["content"]["application/json"]["schema"].clone();
                for name in body.keys() {
                    assert!(
                        member(&doc, &target_body, &format!("/{name}")).is_some(),
                        "{} takes no body member {name}: {link}",
                        link["operationId"]
                    );
                }
                for expression in parameters.values().chain(body.values()) {
                    let expression = expression.as_str().unwrap();
                    assert!(
                        names_a_member(&doc, source, status, expression),
                        "{expression} is not in {} {status}: {link}",
                        source["operationId"]
                    );
                }
                links += 1;
            }
        }
    }
    assert_eq!(links, 9);
}
