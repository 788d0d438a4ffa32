/**
 * The phone UI's composition root: the connection, the board store, the
 * views and what ties them together. Only this module decides which parts
 * exist; each part receives what it uses.
 */

import { Actions } from "./actions.js";
import { Connection } from "./connection.js";
import { toastError } from "./dialogs.js";
import { MetersFeed } from "./meters.js";
import { currentToken, forgetToken, renderPairing, takeTokenFromUrl, webSocketUrl } from "./pairing.js";
import { Router } from "./router.js";
import { StatusBar } from "./status.js";
import { Store } from "./store.js";
import { keepScreenOn } from "./wakelock.js";
import { addView } from "./views/add.js";
import { boardView } from "./views/board.js";
import { filesView } from "./views/files.js";
import { healthView } from "./views/health.js";
import { libraryView } from "./views/library.js";
import { midiView } from "./views/midi.js";
import { performView } from "./views/perform.js";
import { pluginView } from "./views/plugin.js";
import { tunerView } from "./views/tuner.js";

takeTokenFromUrl();

const main = document.getElementById("view");
const conn = new Connection(webSocketUrl);
const store = new Store();
const actions = new Actions(conn);
const meters = new MetersFeed(conn, store);
const router = new Router(main, "board");
const ctx = { conn, store, actions, meters, router };
const tuner = tunerView(ctx);
router.views = {
  board: boardView(ctx),
  plugin: pluginView(ctx),
  add: addView(ctx),
  library: libraryView(ctx),
  perform: performView(ctx),
  tuner,
  health: healthView(ctx),
  midi: midiView(ctx),
  files: filesView(ctx),
};
new StatusBar(ctx);

// A new connection: resynchronise the whole board (protocol.md §5 BOARD_GET).
conn.addEventListener("open", () => {
  store.beginSync();
  conn.send("CATALOG_GET");
  conn.send("BOARD_GET");
});

conn.addEventListener("message", (event) => {
  const message = event.detail;
  store.apply(message);
  if (message.type === "BOARD_STATE") conn.markLive();
});

conn.addEventListener("refused", (event) => toastError(event.detail));

conn.addEventListener("state", (event) => {
  const { state } = event.detail;
  if (state === "unauthorized") {
    const hadToken = Boolean(currentToken());
    forgetToken();
    router.suspend("pairing");
    renderPairing(main, hadToken, () => conn.restart());
    return;
  }
  router.resume();
  if (state === "live" && router.name === "tuner") tuner.resume();
});

// The stage tuner, turned on or off somewhere else (a footswitch, another phone).
store.addEventListener("change", (event) => {
  const { kind, reply_to: replyTo } = event.detail;
  if (kind !== "tuner" || conn.state !== "live") return;
  if (typeof replyTo === "string" && replyTo.startsWith(conn.prefix)) return; // our own request
  if (store.tuner.on && router.name === "perform") router.go("tuner"); // on stage: show it at once
  else if (!store.tuner.on && router.name === "tuner") router.back();
});
document.getElementById("tuner-off").addEventListener("click", () => actions.setTuner(false));

keepScreenOn();
if ("serviceWorker" in navigator && window.isSecureContext) {
  navigator.serviceWorker.register("sw.js").catch(() => {});
}

router.start();
conn.start();
