/**
 * The allowed import directions (docs/boundaries.md): api → engine → store, engine → relay,
 * everyone → schemas; sdk and relay stand on schemas alone; nothing imports upward; no cycles.
 * Run with `npm run lint:deps` (part of `npm run lint`) and by test/boundaries.test.ts.
 */
const product = '^(coordinator|relay|sdk|schemas)/';
/** coordinator/ modules every room may use: they import nothing of the coordinator. */
const leaves = '^coordinator/(metrics|background-loop|version)[.]ts$';
/** The wiring: builds the rooms and connects them, so it may import any of them. */
const wiring = '^coordinator/(app|cli|outbox-[^/]+)[.]ts$';

/** `from` may import only `allowed` (besides npm packages and node builtins). */
const only = (name, comment, from, allowed) => ({
  name,
  comment,
  severity: 'error',
  from: { path: from },
  to: { path: '^(coordinator|relay|sdk|schemas|bench|test|examples|scripts)/', pathNot: allowed },
});

module.exports = {
  forbidden: [
    {
      name: 'no-cycles',
      comment:
        'Modules that import each other cannot be understood, tested or moved one at a time (a type-only import, erased at build, may close a loop).',
      severity: 'error',
      from: { path: product },
      to: { circular: true, viaOnly: { dependencyTypesNot: ['type-only'] } },
    },
    {
      name: 'relay-knows-no-transaction-types',
      comment: "relay/ delivers payloads: what a saga, TCC, XA or workflow message means is the engine's (and the SDK's).",
      severity: 'error',
      from: { path: '^relay/' },
      to: { path: '^schemas/(saga|tcc|xa|workflow)[.]ts$' },
    },
    only('schemas-stand-alone', 'schemas/ is the one source of shapes; it depends on nothing of ours.', '^schemas/', '^schemas/'),
    only('sdk-on-schemas', 'Services install the SDK: it talks to the coordinator through wire formats only.', '^sdk/', '^(sdk|schemas)/'),
    only(
      'relay-on-schemas',
      'relay/ only gets payloads to destinations; it knows no coordinator, SDK or transaction type.',
      '^relay/',
      '^(relay|schemas)/',
    ),
    only(
      'store-on-schemas',
      "The store holds rows; deciding what they mean is the engine's.",
      '^coordinator/store/',
      `^(coordinator/store/|schemas/)|${leaves}`,
    ),
    only(
      'engine-below-api',
      'The engine uses the store and the relay, never the API or the jobs that drive it.',
      '^coordinator/engine/',
      `^(coordinator/(engine|store)/|relay/|schemas/)|${leaves}`,
    ),
    only(
      'api-through-engine',
      'The HTTP API validates, calls the engine and maps errors: no store, no relay.',
      '^coordinator/server/',
      `^(coordinator/(server|engine)/|schemas/)|${leaves}|^coordinator/outbox-drains[.]ts$`,
    ),
    only(
      'jobs-through-engine',
      'The scheduler and the retention job find work through the engine.',
      '^coordinator/(scheduler|retention-job)[.]ts$',
      `^(coordinator/engine/|schemas/)|${leaves}`,
    ),
    only('leaves-are-leaves', 'Shared coordinator utilities import nothing of the coordinator.', leaves, '^schemas/'),
    {
      name: 'wiring-is-top',
      comment: 'Only the entry points import the wiring.',
      severity: 'error',
      from: { path: product, pathNot: wiring },
      to: { path: wiring, pathNot: '^coordinator/outbox-drains[.]ts$' },
    },
    {
      name: 'product-without-tools',
      comment: 'bench/, test/, examples/ and scripts/ use the product; the product never imports them.',
      severity: 'error',
      from: { path: product },
      to: { path: '^(bench|test|examples|scripts)/' },
    },
    {
      name: 'not-to-unresolvable',
      comment: 'An import that resolves to nothing is a typo or a missing dependency.',
      severity: 'error',
      from: {},
      to: { couldNotResolve: true },
    },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    exclude: { path: '(^|/)dist/|^(node_modules|\\.cache)/' },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.json' },
    enhancedResolveOptions: { exportsFields: ['exports'], conditionNames: ['import', 'require', 'node', 'default', 'types'] },
  },
};
