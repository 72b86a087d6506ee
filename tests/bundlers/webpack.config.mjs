// webpack 5 production build of the tiny app (the test runs webpack's Node API with this). The
// wasm-bindgen glue finds its .wasm with `new URL('ferry_bg.wasm', import.meta.url)`, which
// webpack 5 turns into an asset by itself; no loader, no plugin.
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));

export default {
  mode: 'production',
  context: here,
  entry: './app/main.js',
  output: { path: path.join(here, 'dist/webpack'), filename: 'main.js', publicPath: 'auto', clean: true },
  experiments: { topLevelAwait: true }, // main.js awaits at top level; the package does not need it
  performance: { hints: false },
};
