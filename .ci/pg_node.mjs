// node-postgres (pg) against a running service: create a cluster with a master user, connect
// where DescribeDBClusters says (SCRAM-SHA-256), run parameterized statements ($1, text
// parameters, pg's own type parsers), a transaction rolled back, errors with their
// SQLSTATEs; then delete the cluster.
//
// usage: NODE_PATH=target/tools/npm/node_modules node pg_node.mjs http://localhost:8080
import { createRequire } from "node:module";
import assert from "node:assert/strict";
import { join, resolve } from "node:path";

const require = createRequire(join(resolve(process.env.NODE_PATH), "noop.js"));
const { Client } = require("pg");
const [base] = process.argv.slice(2);
const password = "node-Secret9";

async function call(method, path, body) {
  const response = await fetch(base + path, {
    method,
    headers: { "content-type": "application/json" },
    body: body && JSON.stringify(body),
  });
  return response.json();
}

await call("POST", "/v1/clusters", {
  DBClusterIdentifier: "node-shop",
  Engine: "postgres",
  MasterUsername: "app",
  MasterUserPassword: password,
});
let cluster;
for (let i = 0; i < 100; i++) {
  cluster = (await call("GET", "/v1/clusters/node-shop")).DBCluster;
  if (cluster.Port && cluster.Status === "available") break;
  await new Promise((r) => setTimeout(r, 100));
}
const connect = async (pw = password) => {
  const client = new Client({
    host: cluster.Endpoint,
    port: cluster.Port,
    database: cluster.DatabaseName,
    user: cluster.MasterUsername,
    password: pw,
  });
  await client.connect();
  return client;
};

const client = await connect();
await client.query("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT, price REAL, ok BOOLEAN, data BLOB)");
await client.query("INSERT INTO items (name, price, ok, data) VALUES ($1, $2, $3, $4)", [
  "apple", 1.25, true, Buffer.from([0, 1]),
]);
const inserted = await client.query("INSERT INTO items (name, price, ok) VALUES ($1, $2, $3)", ["pear", null, false]);
assert.equal(inserted.rowCount, 1);
const { rows } = await client.query("SELECT id, name, price, ok, data FROM items WHERE name = $1", ["apple"]);
assert.deepEqual(rows, [{ id: "1", name: "apple", price: 1.25, ok: true, data: Buffer.from([0, 1]) }]);
console.log("  ok: parameters and typed results");

await client.query("BEGIN");
await client.query("DELETE FROM items");
await client.query("ROLLBACK");
assert.equal((await client.query("SELECT count(*) AS n FROM items")).rows[0].n, "2");
console.log("  ok: a transaction rolled back");

for (const [sql, params, code] of [
  ["SELECT * FROM missing", [], "42P01"],
  ["INSERT INTO items (id) VALUES ($1)", [1], "23505"],
]) {
  await assert.rejects(client.query(sql, params), (e) => e.code === code);
}
await assert.rejects(connect("wrong-Secret9"), (e) => e.code === "28P01");
console.log("  ok: errors with their SQLSTATEs; a wrong password refused");
await client.end();
await call("DELETE", "/v1/clusters/node-shop");
console.log("node-postgres scenario passed");
