// Calls an adopter must NOT be able to write: tests/e2e/package.test.mjs expects tsc --strict to
// refuse each line marked with an expected error code (TS2345: argument type).
import { Migrator } from "@ferry/migrator";
import { autoMigrate } from "@ferry/migrator/auto";
import "@ferry/migrator/ferry-migrate";

declare const m: Migrator;
await m.resolve(1, "keep"); // TS2345
await m.run({ mode: "sometimes" }); // TS2322
await autoMigrate({ server: "https://ingest.example.com" }); // TS2345
document.querySelector("ferry-migrate")!.getToken = "a token"; // TS2322
