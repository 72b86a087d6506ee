// What the legacy Pantry app left in localStorage, written the way it wrote it: a state
// container (zustand's `persist` middleware) serialises the whole store into one key,
// `pantry-store` = {"state": {...}, "version": 3}. Three app versions of habits are in it:
// `opened` was "yes"/"no", then 1/0, then a boolean; `unit` was once free text; and an old bug
// pushed an edited item again instead of replacing it. `pantry-ui` is the app's own view state,
// which the spec does not read. Used by the page's "Load sample data" and by the e2e test.

export const STORE_KEY = 'pantry-store';
export const UI_KEY = 'pantry-ui';

const day = (iso) => Date.parse(`${iso}T09:00:00Z`);

/** The items, in the order the app pushed them. */
export function legacyItems() {
  return [
    { id: '3f9a1c52-7b1e-4c2a-9d4e-1a2b3c4d5e01', name: 'Flour', qty: 2, unit: 'kg', expires: '2026-12-24', opened: 'yes', updatedAt: day('2026-10-01') },
    { id: '3f9a1c52-7b1e-4c2a-9d4e-1a2b3c4d5e02', name: 'Crème fraîche 🥛', qty: 0.5, unit: 'litre', expires: '2026-11-30', opened: 'no', tags: ['dairy', 'fridge'], updatedAt: day('2026-10-02') },
    { id: '3f9a1c52-7b1e-4c2a-9d4e-1a2b3c4d5e03', name: 'Eggs', qty: 6, unit: '', opened: 1, updatedAt: day('2026-10-03') },
    { id: '3f9a1c52-7b1e-4c2a-9d4e-1a2b3c4d5e04', name: 'Olive oil', qty: 1, unit: 'l', opened: true, tags: ['pantry'], updatedAt: day('2026-10-04'), _persistedBy: 'v2' },
    { id: '3f9a1c52-7b1e-4c2a-9d4e-1a2b3c4d5e05', name: '  Rice  ', unit: 'g', qty: 500, opened: 0, updatedAt: day('2026-10-05') },
    // An edited copy of Flour pushed again (the old bug): the newest copy is the row.
    { id: '3f9a1c52-7b1e-4c2a-9d4e-1a2b3c4d5e01', name: 'Flour (T55)', qty: 1.5, unit: 'kg', expires: '2026-12-24', opened: true, updatedAt: day('2026-10-09') },
    // Broken records: no name; a quantity the app never meant; an unknown unit.
    { id: '3f9a1c52-7b1e-4c2a-9d4e-1a2b3c4d5e06', qty: 3, unit: 'pcs', updatedAt: day('2026-10-06') },
    { id: '3f9a1c52-7b1e-4c2a-9d4e-1a2b3c4d5e07', name: 'Sugar', qty: -1, unit: 'kg', updatedAt: day('2026-10-07') },
    { id: '3f9a1c52-7b1e-4c2a-9d4e-1a2b3c4d5e08', name: 'Salt', qty: 1, unit: 'pinch', opened: 'maybe', updatedAt: day('2026-10-08') },
  ];
}

/** localStorage as the legacy app left it: key → the exact text it stored. */
export function legacyStorage() {
  return {
    [STORE_KEY]: JSON.stringify({ state: { items: legacyItems(), settings: { currency: 'EUR', lowStockAlert: 'no' } }, version: 3 }),
    [UI_KEY]: JSON.stringify({ sort: 'expires', collapsed: ['fridge'], theme: 'dark' }),
  };
}
