#!/usr/bin/env node
// Builds the tiny app of app/ with Vite and with webpack 5 (production), into dist/vite and
// dist/webpack, against the Ferry package in pkg/ — installed the way `npm install ../../pkg`
// would: a link at node_modules/@ferry/migrator. Run: node tests/bundlers/build.mjs
// Prints one JSON line: the files each build wrote, with their sizes.

import { cpSync, existsSync, mkdirSync, readdirSync, rmSync, statSync, symlinkSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'vite';
import webpack from 'webpack';
import viteConfig from './vite.config.mjs';
import webpackConfig from './webpack.config.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const pkg = path.resolve(here, '../../pkg');
if (!existsSync(path.join(pkg, 'package.json'))) throw new Error(`${pkg} has no package.json: run scripts/build-wasm.sh first`);
const link = path.join(here, 'node_modules/@ferry/migrator');
rmSync(link, { recursive: true, force: true });
mkdirSync(path.dirname(link), { recursive: true });
symlinkSync(pkg, link, 'dir');

await build({ ...viteConfig, configFile: false, root: path.join(here, viteConfig.root), build: { ...viteConfig.build, outDir: path.join(here, 'dist/vite') } });

await new Promise((resolve, reject) => webpack(webpackConfig, (err, stats) => {
  if (err) return reject(err);
  if (stats.hasErrors()) return reject(new Error(stats.toString({ all: false, errors: true })));
  resolve();
}));
cpSync(path.join(here, 'app/index.html'), path.join(here, 'dist/webpack/index.html'));

const files = (dir) => readdirSync(dir, { recursive: true })
  .filter((f) => statSync(path.join(dir, f)).isFile())
  .map((f) => ({ file: f, bytes: statSync(path.join(dir, f)).size }));
console.log(JSON.stringify({ vite: files(path.join(here, 'dist/vite')), webpack: files(path.join(here, 'dist/webpack')) }));
