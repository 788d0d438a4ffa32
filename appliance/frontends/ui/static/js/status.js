/**
 * What is always on screen: the connection indicator (honest: "Live" only
 * once the board is resynchronised), a banner while the box is away, the
 * pedalboard playing, DSP load and xruns, and a banner while the stage tuner
 * mutes the box.
 */

import { number } from "./format.js";

const LABELS = {
  idle: "Starting…",
  connecting: "Connecting…",
  syncing: "Syncing…",
  live: "Live",
  waiting: "Offline",
  unauthorized: "Not paired",
};

export class StatusBar {
  constructor({ conn, store, router }) {
    this.conn = conn;
    this.store = store;
    this.router = router;
    this.everLive = false;
    this.el = {
      conn: document.getElementById("conn"),
      title: document.getElementById("board-title"),
      health: document.getElementById("health-chip"),
      connBanner: document.getElementById("conn-banner"),
      connText: document.getElementById("conn-banner-text"),
      tunerBanner: document.getElementById("tuner-banner"),
    };
    document.getElementById("retry-now").addEventListener("click", () => conn.retryNow());
    conn.addEventListener("state", () => this.showConnection());
    store.addEventListener("change", (event) => {
      const { kind } = event.detail;
      if (kind === "library") this.showTitle();
      else if (kind === "health" || kind === "meters") this.showHealth();
      else if (kind === "tuner") this.showTuner();
    });
    window.addEventListener("hashchange", () => this.showTuner());
    setInterval(() => {
      if (conn.state === "waiting") this.showConnection();
    }, 1000);
    this.showConnection();
    this.showTitle();
    this.showHealth();
  }

  showConnection() {
    const { state } = this.conn;
    if (state === "live") this.everLive = true;
    document.body.dataset.conn = state;
    this.el.conn.textContent = LABELS[state] || state;
    let banner = null;
    if (state === "waiting") {
      const seconds = Math.max(0, Math.ceil((this.conn.retryAt - Date.now()) / 1000));
      banner = `Box not reachable${this.everLive ? " (the board shown may be out of date)" : ""}. Retrying in ${seconds} s.`;
    } else if (state === "connecting" && this.conn.attempt > 0) {
      banner = "Box not reachable. Trying again…";
    }
    this.el.connBanner.hidden = banner === null;
    if (banner !== null) this.el.connText.textContent = banner;
  }

  showTitle() {
    const state = this.store.library;
    const name = state && state.pedalboard ? state.pedalboard : "Unsaved board";
    this.el.title.replaceChildren(name);
    if (state && state.snapshot) this.el.title.append(` · ${state.snapshot}`);
    if (state && state.modified && state.pedalboard) {
      const mark = document.createElement("span");
      mark.className = "mod";
      mark.textContent = "•";
      mark.title = "changed since it was saved";
      this.el.title.append(mark);
    }
  }

  showHealth() {
    const e = this.store.engine;
    const chip = this.el.health;
    if (!e) {
      chip.textContent = "DSP –";
      return;
    }
    const stopped = e.running === false;
    chip.classList.toggle("bad", stopped);
    chip.textContent = stopped
      ? "Engine stopped"
      : `DSP ${typeof e.dsp_load === "number" ? number(e.dsp_load, 0) : "–"}% · ${typeof e.xruns === "number" ? e.xruns : "–"} xr`;
  }

  showTuner() {
    this.el.tunerBanner.hidden = !(this.store.tuner.on && this.router.name !== "tuner");
  }
}
