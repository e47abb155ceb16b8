/** A Logger for unit tests that records every record (level + message) and counts like the real one. */
import type { LogCounts, Logger, LogLevel } from '../../../src/log/logger.js';

export interface LogRecord {
  level: LogLevel;
  message: string;
}

export interface RecordingLogger extends Logger {
  records: LogRecord[];
  /** Messages of one level, in order. */
  at(level: LogLevel): string[];
}

export function recordingLogger(): RecordingLogger {
  const records: LogRecord[] = [];
  const counts: LogCounts = { warnings: 0, errors: 0 };
  const make = (): RecordingLogger => {
    const rec = (level: LogLevel) => (message: string) => {
      if (level === 'WARNING') counts.warnings++;
      if (level === 'ERROR' || level === 'CRITICAL') counts.errors++;
      records.push({ level, message });
    };
    return {
      records,
      at: (level) => records.filter((r) => r.level === level).map((r) => r.message),
      debug: rec('DEBUG'),
      info: rec('INFO'),
      warn: rec('WARNING'),
      error: rec('ERROR'),
      critical: rec('CRITICAL'),
      child: () => make(),
      counts,
      logFile: undefined,
      close: async () => undefined,
    };
  };
  return make();
}
