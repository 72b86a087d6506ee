// What the legacy Recipes app left in localStorage, written the way it wrote it: one key per
// recipe (`recipes.item.<slug>`) and `recipes.index`, the JSON array of the live slugs in the
// order the user sorted them. Deleting a recipe only took it out of the index, so stale
// `recipes.item.*` keys remain. App version 1 kept shopping notes under `recipes.notes`
// ({n, text, done: 1|0, t}); version 2 copied them to `recipes.shopping` ({id, note, checked,
// updatedAt}) and forgot to remove the old key. `recipes.draft` is the editor's scratch text,
// which the spec does not read. Used by the page's "Load sample data" and by the e2e test.

export const INDEX_KEY = 'recipes.index';
export const ITEM_PREFIX = 'recipes.item.';

const at = (iso) => Date.parse(iso);

/** The recipes, by slug, as each key holds them. */
export function legacyRecipes() {
  return {
    'pancakes': { title: 'Pancakes', serves: 'four', minutes: 25, vegetarian: 'y', ingredients: ['flour', 'milk', 'eggs'], steps: 'Whisk.\nRest 10 min.\nFry.', created: at('2025-02-01T08:00:00Z') },
    'pho-bo': { title: 'Phở bò 🍜', serves: 2, minutes: 240, vegetarian: 'n', ingredients: ['beef bones', 'star anise', 'rice noodles'], created: at('2025-03-01T18:00:00Z'), updated: at('2025-06-01T18:30:00Z') },
    'salad': { title: 'Green salad', serves: '', vegetarian: true, ingredients: [], created: at('2025-04-01T12:00:00Z') },
    // Listed but broken: no title, and a serving count out of range.
    'mystery': { serves: 3, created: at('2025-05-01T12:00:00Z') },
    'feast': { title: 'Feast', serves: 500, created: at('2025-05-02T12:00:00Z') },
    // Deleted by the user: still stored, not listed in the index.
    'old-soup': { title: 'Old soup', serves: 2, created: at('2024-01-01T12:00:00Z') },
    'test': { title: 'test test', created: at('2024-01-02T12:00:00Z') },
  };
}

/** The live slugs (`old-soup` and `test` were deleted; `lost` was listed, its key is gone). */
export const legacyIndex = () => ['pho-bo', 'pancakes', 'salad', 'mystery', 'feast', 'lost'];

/** Version 1's shopping notes. */
export const legacyNotesV1 = () => [
  { n: 1, text: 'Star anise', done: 1, t: at('2025-05-10T10:00:00Z') },
  { n: 2, text: 'Rice noodles', done: 0, t: at('2025-05-10T10:01:00Z') },
  { n: 3, text: 'Milk, 1 l', done: 0, t: at('2025-05-10T10:02:00Z') },
];

/** Version 2's, copied from version 1 and edited since (note 2 ticked, note 4 new, one broken). */
export const legacyNotesV2 = () => [
  { id: 1, note: 'Star anise', checked: true, updatedAt: at('2025-05-10T10:00:00Z') },
  { id: 2, note: 'Rice noodles', checked: true, updatedAt: '2025-06-02T09:00:00Z' },
  { id: 3, note: 'Milk, 1 l', checked: false, updatedAt: at('2025-05-10T10:02:00Z') },
  { id: 4, note: 'Limes «bio»', updatedAt: '2025-06-02T09:05:00Z' },
  { id: 5, note: '', checked: false, updatedAt: '2025-06-02T09:06:00Z' },
];

/** localStorage as the legacy app left it: key → the exact text it stored. */
export function legacyStorage() {
  const entries = { [INDEX_KEY]: JSON.stringify(legacyIndex()) };
  for (const [slug, recipe] of Object.entries(legacyRecipes())) entries[ITEM_PREFIX + slug] = JSON.stringify(recipe);
  entries['recipes.notes'] = JSON.stringify(legacyNotesV1());
  entries['recipes.shopping'] = JSON.stringify(legacyNotesV2());
  entries['recipes.draft'] = 'Grandma\'s cake: ask her about the sugar';
  return entries;
}
