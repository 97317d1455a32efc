// Peer runner for the benchmark notebooks: runs one mechanism of the npm package @ruvector/attention
// on inputs sent as JSON on stdin and prints its output and timings as JSON on stdout.
//   stdin:  {"prefix": dir holding node_modules, "mechanism": class name (default "HyperbolicAttention"),
//            "args": constructor arguments (default [dim, curvature]), "dim": d, "curvature": k,
//            "query": [...], "keys": [[...]], "values": [[...]], "repeats": r}
//   stdout: {"version", "output", "median_us", "p95_us"} and, for HyperbolicAttention,
//           "exp_map_0_of_0_5" and "log_map_0_of_tanh_0_5" (its exp/log maps at the origin)
const path = require("path");
const input = JSON.parse(require("fs").readFileSync(0, "utf8"));
const root = path.resolve(input.prefix, "node_modules", "@ruvector", "attention");
const attention = require(root);
const f32 = (a) => new Float32Array(a);
const query = f32(input.query);
const keys = input.keys.map(f32);
const values = input.values.map(f32);
const mechanism = input.mechanism || "HyperbolicAttention";
const args = input.args || [input.dim, input.curvature];
const layer = new attention[mechanism](...args);
const output = Array.from(layer.compute(query, keys, values));
const times = [];
for (let r = 0; r < input.repeats; r++) {
  const t0 = process.hrtime.bigint();
  layer.compute(query, keys, values);
  times.push(Number(process.hrtime.bigint() - t0) / 1e3);
}
times.sort((a, b) => a - b);
const at = (p) => times[Math.min(times.length - 1, Math.floor(p * times.length))];
const pkg = require(path.join(root, "package.json"));
const result = { version: pkg.version, mechanism, output, median_us: at(0.5), p95_us: at(0.95) };
if (mechanism === "HyperbolicAttention") {
  const origin = f32([0, 0]);
  result.exp_map_0_of_0_5 = Array.from(attention.expMap(origin, f32([0.5, 0]), 1.0))[0];
  result.log_map_0_of_tanh_0_5 = Array.from(attention.logMap(origin, f32([Math.tanh(0.5), 0]), 1.0))[0];
}
console.log(JSON.stringify(result));
