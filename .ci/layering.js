// The `cairn/layering` lint rule: which folder may import which (docs/architecture.md).
//
// no-restricted-imports matches the text of an import, so a rule written as patterns breaks as
// soon as a folder gains a subfolder (`../errors.ts` from agent/core/engine-options/ is still
// core). This rule resolves every relative import against the importing file instead, finds the
// layer of both ends (the longest folder of the table that contains them) and reports an import
// whose target layer is not in the importer's `may` list. A layer with `packages` may import only
// those packages (and node: builtins): that keeps agent/core free of SDKs.
//
// Options: { layers: [{ name, folder, may: [names], packages?: [names] }],
//            placed: [folders whose every file must belong to a layer],
//            exceptions: [{ from: file, to: file, todo: why it is excused and until when }] }
// Paths are relative to the repository root (the parent of .ci/).
import { dirname, join, normalize, relative, sep } from 'node:path';

const root = new URL('..', import.meta.url).pathname;

/** Repository-relative, '/'-separated; undefined outside the repository. */
function repoPath(absolute) {
  const rel = relative(root, absolute);
  if (rel.startsWith('..') || rel === '') return undefined;
  return rel.split(sep).join('/');
}

function layerOf(layers, path) {
  let best;
  for (const layer of layers) {
    if ((path === layer.folder || path.startsWith(`${layer.folder}/`)) && (!best || layer.folder.length > best.folder.length)) best = layer;
  }
  return best;
}

function packageName(specifier) {
  const parts = specifier.split('/');
  return specifier.startsWith('@') ? parts.slice(0, 2).join('/') : parts[0];
}

const layering = {
  meta: {
    type: 'problem',
    docs: { description: 'Imports follow the layering table of docs/architecture.md' },
    schema: [
      {
        type: 'object',
        properties: {
          layers: { type: 'array' },
          placed: { type: 'array', items: { type: 'string' } },
          exceptions: { type: 'array' },
        },
        required: ['layers'],
        additionalProperties: false,
      },
    ],
    messages: {
      forbidden: '{{from}} may not import {{to}} ({{specifier}}): {{from}} imports only {{allowed}} (docs/architecture.md, "Layers")',
      package:
        '{{from}} may not import the package {{specifier}}: {{from}} imports only {{allowed}} and node: builtins (docs/architecture.md)',
      outside: '{{from}} imports {{specifier}}, which is in no layer of the table (.ci/eslint.config.js, docs/architecture.md)',
      unplaced: '{{file}} is in no layer: add its folder to the layering table in .ci/eslint.config.js and to docs/architecture.md',
      stale: 'the layering exception {{from}} → {{to}} excuses an import this file no longer has: remove it from .ci/eslint.config.js',
    },
  },
  create(context) {
    const { layers, placed = [], exceptions = [] } = context.options[0];
    const file = repoPath(context.filename);
    if (file === undefined) return {};
    const self = layerOf(layers, file);
    if (!self) {
      if (!placed.some((folder) => file.startsWith(`${folder}/`))) return {};
      return {
        Program(node) {
          context.report({ node, messageId: 'unplaced', data: { file } });
        },
      };
    }
    const allowed = new Set([self.name, ...self.may]);
    const excused = exceptions.filter((e) => e.from === file);
    const used = new Set();

    function check(node, specifier) {
      if (typeof specifier !== 'string') return;
      if (specifier.startsWith('node:')) return;
      if (!specifier.startsWith('.') && !specifier.startsWith('/')) {
        if (self.packages && !self.packages.includes(packageName(specifier))) {
          context.report({
            node,
            messageId: 'package',
            data: { from: self.name, specifier, allowed: self.packages.join(', ') || 'no package' },
          });
        }
        return;
      }
      const target = repoPath(normalize(specifier.startsWith('/') ? specifier : join(dirname(context.filename), specifier)));
      if (target === undefined) return;
      const exception = excused.find((e) => e.to === target);
      if (exception) {
        used.add(exception);
        return;
      }
      const to = layerOf(layers, target);
      if (!to) {
        context.report({ node, messageId: 'outside', data: { from: self.name, specifier } });
        return;
      }
      if (!allowed.has(to.name)) {
        context.report({
          node,
          messageId: 'forbidden',
          data: { from: self.name, to: to.name, specifier, allowed: [...allowed].join(', ') },
        });
      }
    }

    const sourced = (node) => node.source && check(node.source, node.source.value);
    return {
      ImportDeclaration: sourced,
      ExportNamedDeclaration: sourced,
      ExportAllDeclaration: sourced,
      ImportExpression(node) {
        if (node.source.type === 'Literal') check(node.source, node.source.value);
      },
      TSImportType(node) {
        const source = node.source ?? node.argument?.literal;
        if (source) check(source, source.value);
      },
      'Program:exit'(node) {
        for (const e of excused) if (!used.has(e)) context.report({ node, messageId: 'stale', data: { from: e.from, to: e.to } });
      },
    };
  },
};

export default { meta: { name: 'cairn' }, rules: { layering } };
