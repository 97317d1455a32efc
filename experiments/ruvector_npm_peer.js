// Peer runner for the benchmark notebooks: runs the npm package @ruvector/attention on inputs
// sent as JSON on stdin and prints its outputs and timings as JSON on stdout.
//   stdin:  {"prefix": dir holding node_modules, "dim": d, "curvature": k, "query": [...],
//            "keys": [[...]], "values": [[...]], "repeats": r}
//   stdout: {"version", "output", "median_us", "p95_us", "exp_map_0_of_0_5", "log_map_0_of_tanh_0_5"}
const path = require("path");
const input = JSON.parse(require("fs").readFileSync(0, "utf8"));
const attention = require(path.join(input.prefix, "node_modules", "@ruvector", "attention"));
const f32 = (a) => new Float32Array(a);
const query = f32(input.query);
const keys = input.keys.map(f32);
const values = input.values.map(f32);
const layer = new attention.HyperbolicAttention(input.dim, input.curvature);
const output = Array.from(layer.compute(query, keys, values));
const times = [];
for (let r = 0; r < input.repeats; r++) {
  const t0 = process.hrtime.bigint();
  layer.compute(query, keys, values);
  times.push(Number(process.hrtime.bigint() - t0) / 1e3);
}
times.sort((a, b) => a - b);
const at = (p) => times[Math.min(times.length - 1, Math.floor(p * times.length))];
const origin = f32([0, 0]);
const pkg = require(path.join(input.prefix, "node_modules", "@ruvector", "attention", "package.json"));
console.log(JSON.stringify({
  version: pkg.version,
  output,
  median_us: at(0.5),
  p95_us: at(0.95),
  exp_map_0_of_0_5: Array.from(attention.expMap(origin, f32([0.5, 0]), 1.0))[0],
  log_map_0_of_tanh_0_5: Array.from(attention.logMap(origin, f32([Math.tanh(0.5), 0]), 1.0))[0],
}));
