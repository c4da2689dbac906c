// One-shot timers owned by the host: they survive guest restarts and hot swaps (not a host
// restart; a guest re-arms what it needs in `init`).
const MAX_DELAY = 2 ** 31 - 1; // setTimeout's limit; longer timers sleep in steps

export function setTimer(instance, id, afterMs, tag) {
  let left = Number(afterMs);
  const arm = () => {
    const step = Math.min(left, MAX_DELAY);
    left -= step;
    instance.timers.set(id, setTimeout(() => {
      if (left > 0) return arm();
      if (instance.timers.delete(id)) instance.deliver({ tag: 'timer', val: [id, tag] });
    }, step));
  };
  arm();
}

export function cancelTimer(instance, id) {
  clearTimeout(instance.timers.get(id));
  instance.timers.delete(id);
}
