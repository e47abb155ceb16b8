import { setCheckpointChain, checkpointNameOf, isOurCheckpoint, isAnyChainCheckpoint, ourCheckpointNumber, formatCptFile } from '../../../src/backup/cpt-file.js';
import { planCheckpoint, findForeignCheckpoints, type CheckpointDomain } from '../../../src/backup/checkpoints.js';
import { checkpointNumber } from '../../../src/chain/names.js';

afterEach(() => setCheckpointChain(undefined));

test('without --chain: the original names', () => {
  expect(checkpointNameOf(0)).toBe('virtnbdbackup.0');
  expect(isOurCheckpoint('virtnbdbackup.7')).toBe(true);
  expect(isOurCheckpoint('virtnbdbackup.daily.7')).toBe(false);
});

test('--chain daily: own prefix; other chains are neither ours nor foreign', async () => {
  setCheckpointChain('daily');
  expect(checkpointNameOf(3)).toBe('virtnbdbackup.daily.3');
  expect(isOurCheckpoint('virtnbdbackup.daily.3')).toBe(true);
  expect(ourCheckpointNumber('virtnbdbackup.daily.3')).toBe(3);
  expect(isOurCheckpoint('virtnbdbackup.3')).toBe(false);
  expect(isOurCheckpoint('virtnbdbackup.weekly.3')).toBe(false);
  expect(isAnyChainCheckpoint('virtnbdbackup.weekly.3')).toBe(true);
  expect(isAnyChainCheckpoint('virtnbdbackup.3')).toBe(true);
  expect(isAnyChainCheckpoint('mine')).toBe(false);
  expect(checkpointNumber('virtnbdbackup.daily.12')).toBe(12);
  expect(() => formatCptFile(['virtnbdbackup.1'])).toThrow(/virtnbdbackup\.daily\.<N>/);
  const plan = await planCheckpoint({ level: 'inc', online: true, cpt: ['virtnbdbackup.daily.0', 'virtnbdbackup.daily.1'], validateParent: async () => true });
  expect(plan).toMatchObject({ name: 'virtnbdbackup.daily.2', parent: 'virtnbdbackup.daily.1' });
  const dom = { name: 'd', listCheckpoints: async () => ['virtnbdbackup.weekly.0', 'virtnbdbackup.0', 'user-snap'].map((name) => ({ name })) } as unknown as CheckpointDomain;
  expect(await findForeignCheckpoints(dom)).toEqual(['user-snap']);
});

test('invalid chain names are refused', () => {
  for (const bad of ['', '1x', 'a/b', 'a.b', '..']) expect(() => setCheckpointChain(bad)).toThrow(TypeError);
});
