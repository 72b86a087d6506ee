// An adopter's start-up code, as a bundled app writes it: the package imported by name.
import { autoMigrate } from '@ferry/migrator/auto';

const status = document.getElementById('status');
// The app's own login; here the ingest server's demo tokens, for a user named in the URL.
const user = new URLSearchParams(location.search).get('user') ?? 'bundled-app-user';
const getToken = async () => {
  const r = await fetch('/dev/token', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ user }) });
  return (await r.json()).token;
};

const result = await autoMigrate({ server: location.origin, getToken, onProgress: (p) => { status.textContent = `Saving your data… ${p.percent ?? ''}`; } });
status.textContent = result.status === 'migrated' ? 'Your data is now saved to your account.' : `Migration: ${result.status}`;
document.body.dataset.result = JSON.stringify(result);
