// The AWS SDK for JavaScript v3 (@aws-sdk/client-rds, @aws-sdk/client-rds-data) against the
// running service, with access keys configured: the same scenario as aws_boto3.py through
// the JS SDK's own query-protocol serializer and XML parser, waiters, paginators and
// exception classes; then a wrong secret, an unknown key and no signature, each refused
// with 403 and its code, with nothing done.
//
// usage: NODE_PATH=target/tools/npm/node_modules node aws_js.mjs URL ACCESS_KEY_ID SECRET
import { createRequire } from "node:module";
import assert from "node:assert/strict";
import { join, resolve } from "node:path";

const require = createRequire(join(resolve(process.env.NODE_PATH), "noop.js"));
const rdsSdk = require("@aws-sdk/client-rds");
const dataSdk = require("@aws-sdk/client-rds-data");
const [url, key, secret] = process.argv.slice(2);
const region = "us-east-1";
const secretArn = `arn:aws:secretsmanager:${region}:000000000000:secret:local`;

const clients = (credentials) => ({
  rds: new rdsSdk.RDSClient({ endpoint: url, region, credentials, maxAttempts: 1 }),
  data: new dataSdk.RDSDataClient({ endpoint: url, region, credentials, maxAttempts: 1 }),
});
const { rds, data } = clients({ accessKeyId: key, secretAccessKey: secret });
const ok = (what) => console.log(`  ok: ${what}`);
const send = (client, Command, input) => client.send(new Command(input));
const sql = (arn, text, more = {}) =>
  send(data, dataSdk.ExecuteStatementCommand, { resourceArn: arn, secretArn, sql: text, ...more });

async function rejects(promise, check, what) {
  try {
    await promise;
  } catch (e) {
    check(e);
    ok(`${what}: ${e.name}`);
    return;
  }
  assert.fail(`${what} did not fail`);
}

const created = (await send(rds, rdsSdk.CreateDBClusterCommand, {
  DBClusterIdentifier: "js-shop", Engine: "aurora-mysql", BacktrackWindow: 86400,
  MasterUsername: "admin", VpcSecurityGroupIds: ["sg-1"],
  Tags: [{ Key: "team", Value: "web" }],
})).DBCluster;
assert.equal(created.DBClusterIdentifier, "js-shop");
assert.deepEqual(created.TagList, [{ Key: "team", Value: "web" }]);
assert.ok(created.ClusterCreateTime instanceof Date);
ok("CreateDBCluster with tags");
const arn = created.DBClusterArn;
await rdsSdk.waitUntilDBClusterAvailable({ client: rds, maxWaitTime: 60, minDelay: 1 },
  { DBClusterIdentifier: "js-shop" });
ok("waitUntilDBClusterAvailable");

for (let i = 0; i < 26; i++) {
  await send(rds, rdsSdk.CreateDBClusterCommand,
    { DBClusterIdentifier: `js-page-${String(i).padStart(2, "0")}`, Engine: "aurora-mysql" });
}
const ids = [];
let pages = 0;
for await (const page of rdsSdk.paginateDescribeDBClusters({ client: rds, pageSize: 20 }, {})) {
  pages++;
  ids.push(...page.DBClusters.map((c) => c.DBClusterIdentifier));
}
assert.ok(pages >= 2 && new Set(ids).size === ids.length && ids.filter((i) => i.startsWith("js-page-")).length === 26);
ok(`paginateDescribeDBClusters: ${ids.length} clusters in ${pages} pages`);

const modified = (await send(rds, rdsSdk.ModifyDBClusterCommand,
  { DBClusterIdentifier: "js-shop", BacktrackWindow: 3600, ApplyImmediately: true })).DBCluster;
assert.equal(modified.BacktrackWindow, 3600);
ok("ModifyDBCluster");

await sql(arn, "CREATE TABLE orders (id INTEGER PRIMARY KEY, item TEXT, qty INTEGER, price REAL, img BLOB)");
const batch = await send(data, dataSdk.BatchExecuteStatementCommand, {
  resourceArn: arn, secretArn,
  sql: "INSERT INTO orders (item, qty, price, img) VALUES (:item, :qty, :price, :img)",
  parameterSets: [["apple", 3, 0.5], ["pear", 2, 0.75]].map(([item, qty, price]) => [
    { name: "item", value: { stringValue: item } }, { name: "qty", value: { longValue: qty } },
    { name: "price", value: { doubleValue: price } },
    { name: "img", value: { blobValue: new Uint8Array([qty, 255]) } }]),
});
assert.equal(batch.updateResults.length, 2);
const tx = (await send(data, dataSdk.BeginTransactionCommand, { resourceArn: arn, secretArn })).transactionId;
await sql(arn, "INSERT INTO orders (item, qty) VALUES ('fig', 7)", { transactionId: tx });
const commit = await send(data, dataSdk.CommitTransactionCommand, { resourceArn: arn, secretArn, transactionId: tx });
assert.equal(commit.transactionStatus, "Transaction Committed");
const rows = await sql(arn, "SELECT item, qty, price, img FROM orders ORDER BY id");
assert.equal(rows.records.length, 3);
assert.equal(rows.records[0][0].stringValue, "apple");
assert.equal(rows.records[0][1].longValue, 3);
assert.equal(rows.records[0][2].doubleValue, 0.5);
assert.deepEqual([...rows.records[0][3].blobValue], [3, 255]);
assert.equal(rows.records[2][2].isNull, true);
ok("a Data API session: DDL, a batch, a transaction, typed values");

await new Promise((r) => setTimeout(r, 1100));
const before = new Date();
await new Promise((r) => setTimeout(r, 1100));
await sql(arn, "DELETE FROM orders");
const started = await send(rds, rdsSdk.BacktrackDBClusterCommand,
  { DBClusterIdentifier: "js-shop", BacktrackTo: before });
assert.equal(started.Status, "pending");
let found;
for (let i = 0; i < 200; i++) {
  found = (await send(rds, rdsSdk.DescribeDBClusterBacktracksCommand, {
    DBClusterIdentifier: "js-shop",
    Filters: [{ Name: "db-cluster-backtrack-id", Values: [started.BacktrackIdentifier] }],
  })).DBClusterBacktracks;
  if (found[0]?.Status === "completed") break;
  await new Promise((r) => setTimeout(r, 100));
}
assert.equal(found[0].Status, "completed");
assert.ok(found[0].BacktrackTo instanceof Date);
const counted = await sql(arn, "SELECT count(*) FROM orders");
assert.equal(counted.records[0][0].longValue, 3);
ok("BacktrackDBCluster, DescribeDBClusterBacktracks until completed: the rows are back");

const events = (await send(rds, rdsSdk.DescribeEventsCommand,
  { SourceType: "db-cluster", SourceIdentifier: "js-shop", EventCategories: ["backtrack"] })).Events;
assert.ok(events.length >= 2 && events.every((e) => e.EventCategories[0] === "backtrack"));
ok(`DescribeEvents: ${events.length} backtrack events`);

await send(rds, rdsSdk.AddTagsToResourceCommand, { ResourceName: arn, Tags: [{ Key: "env", Value: "ci" }] });
await send(rds, rdsSdk.RemoveTagsFromResourceCommand, { ResourceName: arn, TagKeys: ["team"] });
const tags = (await send(rds, rdsSdk.ListTagsForResourceCommand, { ResourceName: arn })).TagList;
assert.deepEqual(tags, [{ Key: "env", Value: "ci" }]);
ok("tags added, listed, removed");

await rejects(send(rds, rdsSdk.DescribeDBClustersCommand, { DBClusterIdentifier: "js-nosuch" }),
  (e) => assert.ok(e instanceof rdsSdk.DBClusterNotFoundFault), "an unknown cluster");
await rejects(send(rds, rdsSdk.CreateDBClusterCommand, { DBClusterIdentifier: "js-shop", Engine: "aurora-mysql" }),
  (e) => assert.ok(e instanceof rdsSdk.DBClusterAlreadyExistsFault), "a second js-shop");
await rejects(send(rds, rdsSdk.BacktrackDBClusterCommand, { DBClusterIdentifier: "js-page-00", BacktrackTo: before }),
  (e) => assert.ok(e instanceof rdsSdk.InvalidDBClusterStateFault), "a backtrack without a window");
await rejects(send(rds, rdsSdk.DescribeDBClusterBacktracksCommand,
  { DBClusterIdentifier: "js-shop", BacktrackIdentifier: "123e4567-e89b-12d3-a456-426655440000" }),
  (e) => assert.ok(e instanceof rdsSdk.DBClusterBacktrackNotFoundFault), "an unknown backtrack");
await rejects(send(rds, rdsSdk.CreateDBClusterCommand, { DBClusterIdentifier: "js-bad", BacktrackWindow: 999999 }),
  (e) => { assert.equal(e.name, "InvalidParameterValue"); assert.equal(e.$metadata.httpStatusCode, 400); },
  "a window over 72 hours");

await send(rds, rdsSdk.DeleteDBClusterCommand, { DBClusterIdentifier: "js-shop", SkipFinalSnapshot: true });
await rdsSdk.waitUntilDBClusterDeleted({ client: rds, maxWaitTime: 60, minDelay: 1 },
  { DBClusterIdentifier: "js-shop" });
ok("DeleteDBCluster and waitUntilDBClusterDeleted");
for (const id of ids.filter((i) => i.startsWith("js-page-"))) {
  await send(rds, rdsSdk.DeleteDBClusterCommand, { DBClusterIdentifier: id, SkipFinalSnapshot: true });
}

// Refusals: nothing they ask for happens.
await send(rds, rdsSdk.CreateDBClusterCommand, { DBClusterIdentifier: "js-kept", BacktrackWindow: 3600 });
const keptArn = `arn:aws:rds:${region}:000000000000:cluster:js-kept`;
await sql(keptArn, "CREATE TABLE t (x INTEGER)");
// Unsigned: the SDK signs, and a middleware after its signer takes the signature off again.
const anonymous = clients({ accessKeyId: key, secretAccessKey: secret });
for (const client of Object.values(anonymous)) {
  client.middlewareStack.addRelativeTo((next) => (args) => {
    delete args.request.headers.authorization;
    return next(args);
  }, { relation: "after", toMiddleware: "httpSigningMiddleware", name: "unsign" });
}
for (const [code, bad] of [
  ["SignatureDoesNotMatch", clients({ accessKeyId: key, secretAccessKey: "not-the-secret" })],
  ["InvalidClientTokenId", clients({ accessKeyId: "AKIDNOBODYKNOWS", secretAccessKey: secret })],
  ["MissingAuthenticationToken", anonymous],
]) {
  const refused = (e) => { assert.equal(e.name, code); assert.equal(e.$metadata.httpStatusCode, 403); };
  await rejects(send(bad.rds, rdsSdk.CreateDBClusterCommand, { DBClusterIdentifier: "js-evil" }), refused, `${code}: CreateDBCluster`);
  await rejects(send(bad.rds, rdsSdk.DeleteDBClusterCommand, { DBClusterIdentifier: "js-kept", SkipFinalSnapshot: true }), refused, `${code}: DeleteDBCluster`);
  await rejects(send(bad.rds, rdsSdk.AddTagsToResourceCommand, { ResourceName: keptArn, Tags: [{ Key: "evil", Value: "1" }] }), refused, `${code}: AddTagsToResource`);
  await rejects(send(bad.data, dataSdk.ExecuteStatementCommand, { resourceArn: keptArn, secretArn, sql: "DROP TABLE t" }), refused, `${code}: ExecuteStatement`);
}
await rejects(send(rds, rdsSdk.DescribeDBClustersCommand, { DBClusterIdentifier: "js-evil" }),
  (e) => assert.ok(e instanceof rdsSdk.DBClusterNotFoundFault), "js-evil was never created");
const kept = (await send(rds, rdsSdk.DescribeDBClustersCommand, { DBClusterIdentifier: "js-kept" })).DBClusters[0];
assert.equal(kept.Status, "available");
assert.deepEqual(kept.TagList, []);
assert.equal((await sql(keptArn, "SELECT count(*) FROM t")).records[0][0].longValue, 0);
ok("js-kept: not deleted, not tagged, its table not dropped");
await send(rds, rdsSdk.DeleteDBClusterCommand, { DBClusterIdentifier: "js-kept", SkipFinalSnapshot: true });
console.log("JS SDK scenario passed");
