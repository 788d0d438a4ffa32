/**
 * Level meters, DSP load and xruns.
 *
 * While the page is visible and connected it subscribes to the box's METERS
 * events (`METERS_SUBSCRIBE {on}`, up to 15 per second, to this page alone)
 * and unsubscribes when hidden. A box that does not know METERS_SUBSCRIBE
 * (an ERROR answer) is asked for HEALTH every few seconds instead, so the
 * DSP load and xruns still show; the refusal is not reported.
 */

import { h } from "./dom.js";
import { number } from "./format.js";

/** The lowest level a meter draws, in dBFS. */
export const METER_FLOOR_DB = -60;
/** How often HEALTH is asked for when the box has no METERS (or for the health view). */
const HEALTH_POLL_MS = 3000;

/** One horizontal peak meter (−60…0 dBFS). */
export class MeterBar {
  constructor(label) {
    this.fillEl = h("i");
    this.el = h(
      "div",
      { class: "meter", role: "meter", "aria-label": label, "aria-valuemin": METER_FLOOR_DB, "aria-valuemax": 0, "aria-valuenow": METER_FLOOR_DB },
      this.fillEl,
    );
  }

  /** Show a peak level in dBFS. */
  set(db) {
    const level = typeof db === "number" && Number.isFinite(db) ? db : -120;
    const fraction = Math.min(Math.max((level - METER_FLOOR_DB) / -METER_FLOOR_DB, 0), 1);
    this.fillEl.style.width = `${(fraction * 100).toFixed(1)}%`;
    this.el.classList.toggle("hot", level > -6 && level <= -1);
    this.el.classList.toggle("clip", level > -1);
    this.el.setAttribute("aria-valuenow", String(Math.max(level, METER_FLOOR_DB).toFixed(1)));
    this.el.setAttribute("aria-valuetext", level <= -120 ? "silence" : `${number(level, 1)} dBFS`);
  }
}

/** Keeps this page subscribed to METERS while it is visible and connected. */
export class MetersFeed {
  /**
   * @param {import("./connection.js").Connection} conn
   * @param {import("./store.js").Store} store
   */
  constructor(conn, store) {
    this.conn = conn;
    this.store = store;
    /** null: not known yet; true: the box sends METERS; false: it does not. */
    this.supported = null;
    this.subscribed = false;
    this.pollTimer = 0;
    this.wantHealth = false;
    document.addEventListener("visibilitychange", () => this.sync());
    conn.addEventListener("state", () => this.sync());
    conn.addEventListener("open", () => {
      this.supported = null; // the box may have been updated meanwhile
    });
    conn.addEventListener("message", (event) => this._message(event.detail));
  }

  /** The health view wants HEALTH reports whether or not METERS flow. */
  setWantHealth(on) {
    this.wantHealth = on;
    this.sync();
  }

  /** Subscribe or unsubscribe to match visibility and the connection. */
  sync() {
    const live = this.conn.state === "live";
    const visible = document.visibilityState === "visible";
    if (!live) {
      this.subscribed = false; // a new connection starts unsubscribed
      this._poll(false);
      return;
    }
    if (visible && !this.subscribed && this.supported !== false) {
      this.subscribed = true;
      this.subscribeId = this.conn.send("METERS_SUBSCRIBE", { on: true }, { quiet: true });
    } else if (!visible && this.subscribed) {
      this.subscribed = false;
      this.conn.send("METERS_SUBSCRIBE", { on: false }, { quiet: true });
    }
    this._poll(visible && (this.supported === false || this.wantHealth));
  }

  _poll(on) {
    if (on && !this.pollTimer) {
      this.conn.send("HEALTH_GET", undefined, { quiet: true });
      this.pollTimer = setInterval(() => this.conn.send("HEALTH_GET", undefined, { quiet: true }), HEALTH_POLL_MS);
    } else if (!on && this.pollTimer) {
      clearInterval(this.pollTimer);
      this.pollTimer = 0;
    }
  }

  _message(message) {
    if (message.reply_to === undefined || message.reply_to !== this.subscribeId) return;
    if (message.type === "ERROR") {
      this.supported = false;
      this.subscribed = false;
      this.sync();
    } else if (message.type === "METERS_SUBSCRIBE") {
      this.supported = true;
      this.sync();
    }
  }
}
