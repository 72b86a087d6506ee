// Types of auto.js (Ferry's one-call auto-run). The migrator's own types come from ferry.d.ts,
// which wasm-bindgen generates from the Rust facade and ferry-core's contract types.
import type { Failure, FerryErrorCode, Migrator, MigratorOptions, Progress, RunReport, TokenProvider } from './ferry.js';

export interface AutoMigrateOptions {
  /** The ingest server's origin, e.g. "https://ingest.example.com". */
  server: string;
  /** Resolves to the user's bearer token; called with `true` after the server refused one. */
  getToken: TokenProvider;
  /** The migration spec (JSON text or object); default: `GET {server}/v1/spec`, cached. */
  spec?: string | object;
  /** Progress of the run; an unchanged browser reports only the "inspect" stage. */
  onProgress?: (progress: Progress) => void;
  /** Every result, including those of the background retries. */
  onResult?: (result: AutoResult) => void;
  /** Retry in the background while the server is unreachable; default true. */
  retry?: boolean;
  /** Stops the background retries. */
  signal?: AbortSignal;
  /** Remove the migrated keys from localStorage once verified; default false. */
  cleanup?: boolean;
  /** Also upload the sealed backup to the server; default false. */
  uploadBackup?: boolean;
  /** Options of the migrator (storage name, batch bounds, retry policy…). */
  migrator?: MigratorOptions;
}

/** The codes an auto-run failure can carry: the migrator's own and these steps'. */
export type AutoErrorCode = FerryErrorCode | "load_failed" | "spec_unavailable" | "unknown";

export interface AutoError { code: AutoErrorCode; failure: Failure; message: string }

export type AutoResult =
  | { status: "migrated"; report: RunReport }
  /**
   * Nothing changed since the last migration, or nothing to migrate. `report` is null when the
   * light first step answered (localStorage is what the last verified migration saw): then the
   * wasm bundle was not downloaded and no request was made.
   */
  | { status: "nothing_to_do"; report: RunReport | null }
  /** Another tab of this origin is running it; its completed run reaches `onResult` as "migrated". */
  | { status: "in_other_tab"; report: RunReport }
  /** The server is unreachable; the next attempt is in `retryInMs` (results go to `onResult`). */
  | { status: "retrying"; error: AutoError; retryInMs: number }
  /** A permanent failure: logged once; the next page load tries again. */
  | { status: "failed"; error: AutoError };

export type AutoStatus = AutoResult["status"];

/** Runs the app's migration automatically; resolves to the first result, never rejects. */
export function autoMigrate(options: AutoMigrateOptions): Promise<AutoResult>;

/** The page's shared migrator (the one autoMigrate uses), for an app's own UI. Rejects with a `FerryError`. */
export function getMigrator(
  options: Pick<AutoMigrateOptions, "server" | "getToken" | "spec" | "migrator">,
  how?: { fresh?: boolean },
): Promise<Migrator>;

/** Forgets the page's migrators (sign-out). */
export function dropMigrators(): void;

/** Whether a failure is worth retrying without the user (server or network down). */
export function isTransient(error: unknown): boolean;
