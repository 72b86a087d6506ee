// Vite production build of the tiny app: `vite build` (the test calls Vite's `build()` with this).
export default {
  root: 'app',
  base: './',
  logLevel: 'warn',
  build: { outDir: '../dist/vite', emptyOutDir: true, target: 'es2022' },
};
