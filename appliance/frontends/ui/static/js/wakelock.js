/**
 * Keep the screen on while the page is visible (Screen Wake Lock API, where
 * the browser has it: Chrome and Safari, in a secure context). The lock is
 * dropped by the browser when the page is hidden, and taken again when it
 * comes back.
 */

export function keepScreenOn() {
  if (!("wakeLock" in navigator)) return;
  let lock = null;
  const acquire = async () => {
    if (lock || document.visibilityState !== "visible") return;
    try {
      lock = await navigator.wakeLock.request("screen");
      lock.addEventListener("release", () => {
        lock = null;
      });
    } catch {
      lock = null; // refused (battery saver, not allowed): the screen may sleep
    }
  };
  document.addEventListener("visibilitychange", acquire);
  document.addEventListener("pointerdown", acquire, { passive: true });
  acquire();
}
