/**
 * Views by the address's hash: `#/board`, `#/plugin/<plugin_id>`,
 * `#/add/<track_id>`, `#/library`, `#/perform`, `#/tuner`, `#/health`, `#/midi`,
 * `#/files`.
 * Each view has `mount(main, args)` and `unmount()`.
 */

import { h } from "./dom.js";

/** The ◀ button of a page that leads back to the view ``view`` (``"board"``, ``"health"``). */
export function backButton(router, view, label) {
  return h("button", { type: "button", "aria-label": label, text: "◀", onclick: () => router.go(view) });
}

export class Router {
  /**
   * @param {HTMLElement} main where views draw.
   * @param {string} fallback the view for an empty or unknown hash.
   */
  constructor(main, fallback) {
    this.main = main;
    /** @type {Object<string, {mount: Function, unmount?: Function}>} the views by name, set before start(). */
    this.views = {};
    this.fallback = fallback;
    this.current = null;
    this.key = null;
    this.suspended = false;
    this.history = [];
    this.skipPush = false;
  }

  start() {
    window.addEventListener("hashchange", () => this.route());
    this.route();
  }

  /** The current view's name and arguments. */
  parse() {
    const parts = window.location.hash.replace(/^#\/?/, "").split("/").filter(Boolean).map(decodeURIComponent);
    const name = parts[0] in this.views ? parts[0] : this.fallback;
    return { name, args: name === parts[0] ? parts.slice(1) : [] };
  }

  route(force = false) {
    if (this.suspended) return;
    const { name, args } = this.parse();
    const key = [name, ...args].join("/");
    if (!force && key === this.key) return;
    if (this.current && this.current.unmount) this.current.unmount();
    if (this.key && this.key !== key && !this.skipPush) this.history.push(this.key);
    this.skipPush = false;
    if (this.history.length > 20) this.history.shift();
    this.key = key;
    this.name = name;
    this.current = this.views[name];
    document.body.dataset.view = name;
    for (const link of document.querySelectorAll("[data-nav]")) {
      if (link.dataset.nav === name) link.setAttribute("aria-current", "page");
      else link.removeAttribute("aria-current");
    }
    this.main.replaceChildren();
    window.scrollTo(0, 0);
    this.current.mount(this.main, args);
  }

  /** Go to a view (`"board"`, `"plugin/plugin_3"`). */
  go(path) {
    const hash = `#/${path}`;
    if (window.location.hash === hash) this.route(true);
    else window.location.hash = hash;
  }

  /** Back to the view before this one (the board when there was none). */
  back() {
    const previous = this.history.pop();
    this.skipPush = true; // going back is not a new step
    this.go(previous && previous !== this.key ? previous : this.fallback);
  }

  /** Stop drawing views (a full-page notice is up). */
  suspend(name) {
    if (this.current && this.current.unmount) this.current.unmount();
    this.current = null;
    this.key = null;
    this.suspended = true;
    document.body.dataset.view = name;
  }

  resume() {
    if (!this.suspended) return;
    this.suspended = false;
    this.route(true);
  }
}
