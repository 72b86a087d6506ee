// Types of ferry-migrate.js: the <ferry-migrate> web component ("Migrate my data" with progress,
// report, conflicts and backups). Importing the module defines the element.
import type { FerryError, RunReport, TokenProvider } from './ferry.js';

export interface FerryRestoredDetail { restored: number; backupId: string }
export interface FerryResolvedDetail { id: number; choice: "stored" | "incoming" | "edited" }

export declare class FerryMigrate extends HTMLElement {
  /** The user's bearer token; give it the same function as `autoMigrate`'s `getToken`. Required. */
  getToken: TokenProvider | null;
  /** The spec (JSON text or object) when the page has it; default: fetched from the server. */
  spec: string | object | undefined;
  /** Names for the kinds in the report, e.g. `{ tasks: "Tasks" }`. */
  kindLabels: Record<string, string>;
  /** Runs (or resumes) a migration, as the button does; resolves to null when it failed. */
  migrate(): Promise<RunReport | null>;
  /** Shows a run report made elsewhere (e.g. `autoMigrate`'s result) as the button's would be. */
  show(report: RunReport | null): void;
  /** Re-reads the conflicts and backups (done by itself when it is shown and after every run). */
  refresh(): Promise<void>;
}

declare global {
  interface HTMLElementTagNameMap { "ferry-migrate": FerryMigrate }
  interface HTMLElementEventMap {
    "ferry-done": CustomEvent<RunReport>;
    "ferry-restored": CustomEvent<FerryRestoredDetail>;
    "ferry-resolved": CustomEvent<FerryResolvedDetail>;
    "ferry-error": CustomEvent<FerryError>;
  }
}
