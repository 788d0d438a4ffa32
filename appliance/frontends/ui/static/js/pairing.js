/**
 * Pairing (protocol.md §3): a box with `auth: token` wants its token on the
 * WebSocket URL. The first visit brings it as `?token=` in the page's URL; it
 * is kept in localStorage and taken out of the address bar, so that a
 * bookmark or a screenshot does not carry it. A wrong or missing token gets
 * a page that says where to find it.
 */

import { fill, h } from "./dom.js";

const STORAGE_KEY = "pedalboard.token";

function storage() {
  try {
    return window.localStorage;
  } catch {
    return null; // storage disabled: the token lives for this page only
  }
}

let memory = null;

/** Take `?token=` from the address bar (keeping it) and remove it from the URL. */
export function takeTokenFromUrl() {
  const url = new URL(window.location.href);
  const token = url.searchParams.get("token");
  if (token === null) return;
  saveToken(token.trim());
  url.searchParams.delete("token");
  window.history.replaceState(window.history.state, "", url.pathname + url.search + url.hash);
}

export function saveToken(token) {
  memory = token || null;
  const store = storage();
  if (!store) return;
  if (token) store.setItem(STORAGE_KEY, token);
  else store.removeItem(STORAGE_KEY);
}

export function forgetToken() {
  saveToken(null);
}

/** The token this phone was paired with, or null. */
export function currentToken() {
  const store = storage();
  return (store && store.getItem(STORAGE_KEY)) || memory;
}

/** The box's WebSocket URL, with the token when there is one. */
export function webSocketUrl() {
  const scheme = window.location.protocol === "https:" ? "wss" : "ws";
  const token = currentToken();
  const query = token ? `?token=${encodeURIComponent(token)}` : "";
  return `${scheme}://${window.location.host}/ws${query}`;
}

/** The address that pairs another phone with this box. */
export function pairingUrl() {
  const token = currentToken();
  const base = `${window.location.origin}/`;
  return token ? `${base}?token=${encodeURIComponent(token)}` : base;
}

/**
 * Draw the pairing page into `main`.
 *
 * @param {HTMLElement} main the view container.
 * @param {boolean} hadToken whether a (now refused) token was offered.
 * @param {() => void} retry connect again with whatever token is stored now.
 */
export function renderPairing(main, hadToken, retry) {
  const input = h("input", { type: "text", autocomplete: "off", autocapitalize: "off", spellcheck: "false", "aria-label": "Pairing token" });
  const host = window.location.host;
  fill(
    main,
    h(
      "div",
      { class: "notice", id: "pairing" },
      h("h1", {}, "Pair this phone with the box"),
      h(
        "p",
        {},
        hadToken
          ? "The box did not accept this phone's pairing token. It may have been made anew."
          : "This box only takes orders from paired phones, and this phone is not paired yet.",
      ),
      h(
        "ol",
        {},
        h(
          "li",
          {},
          "Find the token: it is in the file ",
          h("code", {}, "appliance-token.txt"),
          " on the SD card's boot partition (readable from any computer; on the box it is ",
          h("code", {}, "/boot/firmware/appliance-token.txt"),
          ").",
        ),
        h("li", {}, "Open ", h("code", {}, `http://${host}/?token=`), h("em", {}, "the token"), " on this phone once. It remembers it."),
        h("li", {}, "Or a paired phone can show a QR code of that address (Health → Pair another phone)."),
      ),
      h(
        "form",
        {
          onsubmit: (e) => {
            e.preventDefault();
            const token = input.value.trim();
            if (!token) return;
            saveToken(token);
            retry();
          },
        },
        h("label", {}, "Or paste the token here:", input),
        h("button", { type: "submit", class: "primary" }, "Pair"),
      ),
    ),
  );
}
