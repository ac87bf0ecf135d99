// Reads a JSON array of TraceQL queries on stdin and prints one JSON result per query:
// {"query", "ok", "errors": [{"from", "to"}]}. Grafana's editor uses this same grammar, so a
// query that yields an error node here shows a red squiggle in Grafana too.
import { parser } from "@grafana/lezer-traceql";

function check(query) {
  const tree = parser.parse(query);
  const errors = [];
  const cursor = tree.cursor();
  do {
    if (cursor.type.isError) errors.push({ from: cursor.from, to: cursor.to });
  } while (cursor.next());
  return { query, ok: errors.length === 0, errors };
}

let input = "";
process.stdin.setEncoding("utf8");
process.stdin.on("data", (chunk) => { input += chunk; });
process.stdin.on("end", () => {
  const queries = JSON.parse(input);
  process.stdout.write(JSON.stringify(queries.map(check)) + "\n");
});
