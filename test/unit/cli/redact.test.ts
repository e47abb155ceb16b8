/** The logged command line never carries the --password value (D31), in every spelling. */
import { redactedArgs } from '../../../src/cli/run.js';

test('redactedArgs hides --password values (separate, =, abbreviated) and keeps everything else', () => {
  expect(redactedArgs(['-d', 'vm', '--password', 's3cret', '-l', 'full'])).toBe('-d vm --password *** -l full');
  expect(redactedArgs(['--password=s3cret'])).toBe('--password=***');
  expect(redactedArgs(['--passw', 's3cret', '--pause'])).toBe('--passw *** --pause');
  expect(redactedArgs(['--pass=s3cret', '-o', '/b'])).toBe('--pass=*** -o /b');
  expect(redactedArgs(['-i', '/backup', '-o', 'verify'])).not.toContain('***');
});
