// Call Constant Contact through ccportal's proxy from Node (18 or later: fetch is built in).
//   CCPORTAL_URL=http://127.0.0.1:8000 CCPORTAL_TOKEN=ccp_... node examples/proxy_client.mjs
const base = process.env.CCPORTAL_URL ?? "http://127.0.0.1:8000";
const response = await fetch(`${base}/proxy/v3/contact_lists?include_count=true`, {
  headers: { Authorization: `Bearer ${process.env.CCPORTAL_TOKEN}` },
});
if (response.status === 429) {
  // ccportal refused before CC could: wait as it says, then ask again.
  const body = await response.json();
  console.error(`${body.error_key}: retry after ${response.headers.get("Retry-After")} s`);
  process.exit(2);
}
if (!response.ok) {
  console.error(response.status, await response.text());
  process.exit(1);
}
const { lists } = await response.json();
for (const list of lists) console.log(`${list.name}\t${list.membership_count ?? ""}`);
console.log(`left today: ${response.headers.get("X-CC-Quota-Remaining")}`);
