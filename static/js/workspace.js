// Everything the app needs once someone is signed in: this device's store, the sync
// engine and its transport, the list and project screens and their dialogs. app.js
// loads it after the sign-in form is up, so a first visit on a slow network downloads
// the form first (index.html preloads only what the form needs); the service worker
// keeps it with the rest of the shell.
export { openStore, deleteStore } from './store.js';
export { Transport } from './transport.js';
export { SyncEngine } from './sync.js';
export { uuid } from './project.js';
export { createList, LIST_PAGE } from './views/list.js';
export { createDetail } from './views/detail.js';
export { openProjectForm } from './views/form.js';
export { confirmDelete } from './views/confirm.js';
export { openConflict } from './views/conflict.js';
