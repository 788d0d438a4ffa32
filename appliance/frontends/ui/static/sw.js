/*
 * The service worker: the app shell from a cache, so that the page opens at
 * once (and says "box not reachable" when the box is away) instead of a
 * browser error page. The control protocol (/ws) and /healthz never go
 * through it. Each shell file is refreshed in the background whenever it is
 * served, so a box with a new UI is picked up on the next visit; bump
 * VERSION when the list of files changes.
 */

const VERSION = "pedalboard-ui-5";
const SHELL = [
  "./",
  "index.html",
  "app.css",
  "manifest.json",
  "icon.svg",
  "icon-192.png",
  "icon-512.png",
  "js/actions.js",
  "js/categories.js",
  "js/connection.js",
  "js/controls.js",
  "js/dialogs.js",
  "js/dom.js",
  "js/format.js",
  "js/main.js",
  "js/meters.js",
  "js/midi.js",
  "js/pairing.js",
  "js/qr.js",
  "js/router.js",
  "js/status.js",
  "js/store.js",
  "js/uploads.js",
  "js/wakelock.js",
  "js/views/add.js",
  "js/views/board.js",
  "js/views/files.js",
  "js/views/health.js",
  "js/views/library.js",
  "js/views/midi.js",
  "js/views/perform.js",
  "js/views/plugin.js",
  "js/views/tuner.js",
];
/** Paths that are never cached nor answered from the cache. */
const NEVER = ["/ws", "/healthz"];

self.addEventListener("install", (event) => {
  event.waitUntil(
    caches
      .open(VERSION)
      .then((cache) => cache.addAll(SHELL))
      .then(() => self.skipWaiting()),
  );
});

self.addEventListener("activate", (event) => {
  event.waitUntil(
    caches
      .keys()
      .then((keys) => Promise.all(keys.filter((key) => key !== VERSION).map((key) => caches.delete(key))))
      .then(() => self.clients.claim()),
  );
});

self.addEventListener("fetch", (event) => {
  const request = event.request;
  if (request.method !== "GET") return;
  const url = new URL(request.url);
  if (url.origin !== self.location.origin || NEVER.includes(url.pathname)) return;
  // Every page address (with or without ?token=) is the one shell page.
  const key = request.mode === "navigate" ? new URL("./", self.location.href).href : url.origin + url.pathname;
  event.respondWith(
    caches.open(VERSION).then(async (cache) => {
      const cached = await cache.match(key);
      const fresh = fetch(request)
        .then((response) => {
          if (response.ok) cache.put(key, response.clone());
          return response;
        })
        .catch(() => null);
      if (cached) {
        event.waitUntil(fresh);
        return cached;
      }
      const response = await fresh;
      return response || new Response("The box is not reachable.", { status: 503, headers: { "Content-Type": "text/plain" } });
    }),
  );
});
