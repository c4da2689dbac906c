// Logs and metrics: guest lines go to stderr with the instance and target; metrics are kept in
// memory and published as Prometheus text at /metrics.
const LEVELS = ['trace', 'debug', 'info', 'warn', 'error'];

export function createLog(level) {
  const min = LEVELS.indexOf(level) < 0 ? 2 : LEVELS.indexOf(level);
  const write = (lvl, text) => {
    if (LEVELS.indexOf(lvl) >= min) process.stderr.write(`${new Date().toISOString()} ${lvl.toUpperCase()} ${text}\n`);
  };
  return {
    level: LEVELS[min],
    enabled: (lvl) => LEVELS.indexOf(lvl) >= min,
    guest: (lvl, instance, target, message) => write(lvl, `guest.${target} instance=${instance} ${message}`),
    info: (text) => write('info', text),
    warn: (text) => write('warn', text),
    error: (text) => write('error', text),
  };
}

export function createMetrics() {
  const values = new Map(); // "name{labels}" -> number
  const key = (name, instance, labels) => {
    const all = [['instance', instance], ...labels.map((l) => [l.name, l.value])].sort(([a], [b]) => (a < b ? -1 : 1));
    return `${name}{${all.map(([n, v]) => `${n}="${String(v).replace(/["\\\n]/g, '_')}"`).join(',')}}`;
  };
  return {
    add: (name, instance, labels, delta) => {
      const k = key(name, instance, labels);
      values.set(k, (values.get(k) ?? 0) + delta);
    },
    set: (name, instance, labels, value) => values.set(key(name, instance, labels), value),
    render: () => [...values].sort().map(([k, v]) => `${k} ${v}`).join('\n') + '\n',
  };
}
