// An adopting app's use of every public call of the package, compiled with `tsc --strict` by
// tests/e2e/package.test.mjs against the built pkg/ (resolved through its package.json
// "exports", as an app's bundler would). It is type-checked, never run.
import init, { Migrator } from "@ferry/migrator";
import type { Choice, Conflict, FerryError, Outcome, Progress, RunReport } from "@ferry/migrator";
import { autoMigrate, dropMigrators, getMigrator, isTransient } from "@ferry/migrator/auto";
import type { AutoResult } from "@ferry/migrator/auto";
import "@ferry/migrator/ferry-migrate";
import type { FerryMigrate } from "@ferry/migrator/ferry-migrate";

declare const spec: string;
const getToken = async (refresh: boolean): Promise<string> => (refresh ? "fresh" : "cached");

// Auto-run: the few lines README's "Add Ferry to your app" shows.
const first: AutoResult = await autoMigrate({ server: "https://ingest.example.com", getToken });
if (first.status === "failed") console.log(first.error.code, first.error.message);
if (first.status === "migrated") console.log(first.report.recordsSent);
await autoMigrate({
  server: "https://ingest.example.com", getToken, spec, retry: false, cleanup: false,
  signal: new AbortController().signal, migrator: { storageName: "app" },
  onProgress: (p: Progress) => console.log(p.stage, p.percent),
  onResult: (r) => { if (r.status === "retrying") console.log(r.retryInMs); },
});

// The migrator itself: options objects are optional.
await init();
const m = new Migrator(spec, "https://ingest.example.com", getToken);
const n = new Migrator(spec, "https://ingest.example.com", getToken, { storageName: "app", lock: "lease" });
const report: RunReport = await m.run();
await n.run({ mode: "manual", dryRun: true, onProgress: (p) => console.log(p.etaMs) });
console.log(report.status === "completed", report.outcomes.tasks?.inserted);
const inspection = await m.inspect();
console.log(inspection.state);
const backups = await m.backups();
const first_backup = backups[0];
if (first_backup) {
  const { restored } = await m.restore(first_backup.id);
  const file: Uint8Array = await m.exportBackup(first_backup.id, "a long passphrase");
  console.log(restored, file.length);
}
await m.backupNow();
await m.exportNow("a long passphrase");
const conflicts: Conflict[] = await m.conflicts();
const choice: Choice = "stored";
for (const c of conflicts) {
  await m.resolve(c.id, choice);
  await m.resolve(c.id, "edited", { title: "mine" });
}
await m.rollback();
await m.rollback("0190c0de-0000-7000-8000-000000000000");
m.onOutcome((o: Outcome) => console.log(o.status));
try {
  await (await getMigrator({ server: "https://ingest.example.com", getToken })).run();
} catch (e) {
  const err = e as FerryError;
  console.log(err.code, err.failure, isTransient(err));
}
dropMigrators();
m.free();

// The <ferry-migrate> component: the full "Migrate my data" UI.
const ui: FerryMigrate | null = document.querySelector("ferry-migrate");
if (ui) {
  ui.getToken = getToken;
  ui.kindLabels = { tasks: "Tasks" };
  ui.spec = spec;
  ui.addEventListener("ferry-restored", (e) => console.log(e.detail.restored, e.detail.backupId));
  ui.addEventListener("ferry-done", (e) => console.log(e.detail.recordsSent));
  ui.addEventListener("ferry-resolved", (e) => console.log(e.detail.choice));
  ui.addEventListener("ferry-error", (e) => console.log(e.detail.code));
  const done: RunReport | null = await ui.migrate();
  await ui.refresh();
  ui.show(first.status === "migrated" ? first.report : null);
  console.log(done?.status);
}
