#!/usr/bin/env node
// Compile contracts/ with the pinned solc-js into abis/<Contract>.json (ABI, bytecode, deployed
// bytecode, compiler version, source hash). Deterministic: same sources and pins, same bytes.
//   node scripts/compile.js           write abis/
//   node scripts/compile.js --check   exit 1 if abis/ differs from a fresh compile
'use strict';
const fs = require('fs');
const path = require('path');
const crypto = require('crypto');
const solc = require('solc');

const ROOT = path.resolve(__dirname, '..');
const CONTRACTS = path.join(ROOT, 'contracts');
const ABIS = path.join(ROOT, 'abis');
const NODE_MODULES = path.join(ROOT, 'node_modules');
// Contracts whose artifacts the keeper and the deploy script use.
const TARGETS = ['TestToken', 'PriceFeed', 'LendingPool', 'SwapVenue', 'PerpMarket', 'OptionMarket', 'RiskVault',
  // Test only (tests/integration): never deployed by the keeper or the devnet.
  'ReentrantToken'];
const SETTINGS = {
  optimizer: { enabled: true, runs: 200 },
  viaIR: true,
  evmVersion: 'cancun',
  metadata: { bytecodeHash: 'none' },
  outputSelection: { '*': { '*': ['abi', 'evm.bytecode.object', 'evm.deployedBytecode.object'] } },
};

function listSol(dir) {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) return listSol(p);
    return e.name.endsWith('.sol') ? [p] : [];
  }).sort();
}

function sourceHash(sources) {
  // The hash the Python side recomputes: sha256 over "path\0content\0" of contracts/ sources,
  // sorted by path, plus the compiler version and settings.
  const h = crypto.createHash('sha256');
  for (const key of Object.keys(sources).sort()) {
    if (key.startsWith('@')) continue;
    h.update(key + '\0' + sources[key].content + '\0');
  }
  h.update(solc.version() + '\0' + JSON.stringify(SETTINGS));
  return h.digest('hex');
}

function main() {
  const check = process.argv.includes('--check');
  const sources = {};
  for (const file of listSol(CONTRACTS)) {
    const key = path.relative(ROOT, file).split(path.sep).join('/');
    sources[key] = { content: fs.readFileSync(file, 'utf8') };
  }
  const imported = {};
  const findImports = (p) => {
    const full = p.startsWith('@') ? path.join(NODE_MODULES, p) : path.join(ROOT, p);
    if (!fs.existsSync(full)) return { error: 'not found: ' + p };
    imported[p] = true;
    return { contents: fs.readFileSync(full, 'utf8') };
  };
  const input = { language: 'Solidity', sources, settings: SETTINGS };
  const output = JSON.parse(solc.compile(JSON.stringify(input), { import: findImports }));
  const errors = (output.errors || []).filter((e) => e.severity === 'error');
  for (const e of output.errors || []) {
    if (e.severity === 'error' || !/SPDX|shadows|unreachable/.test(e.message)) process.stderr.write(e.formattedMessage + '\n');
  }
  if (errors.length) process.exit(1);

  const hash = sourceHash(sources);
  const artifacts = {};
  for (const [file, contracts] of Object.entries(output.contracts)) {
    for (const [name, c] of Object.entries(contracts)) {
      if (!TARGETS.includes(name) || !file.startsWith('contracts/')) continue;
      artifacts[name] = JSON.stringify({
        contractName: name,
        sourceName: file,
        compiler: { name: 'solc-js', version: solc.version(), settings: SETTINGS },
        sourceHash: hash,
        abi: c.abi,
        bytecode: '0x' + c.evm.bytecode.object,
        deployedBytecode: '0x' + c.evm.deployedBytecode.object,
      }, null, 2) + '\n';
    }
  }
  const missing = TARGETS.filter((t) => !(t in artifacts));
  if (missing.length) { process.stderr.write('missing contracts: ' + missing.join(', ') + '\n'); process.exit(1); }

  let stale = [];
  if (!check) fs.mkdirSync(ABIS, { recursive: true });
  for (const [name, text] of Object.entries(artifacts)) {
    const out = path.join(ABIS, name + '.json');
    const old = fs.existsSync(out) ? fs.readFileSync(out, 'utf8') : null;
    if (old === text) continue;
    if (check) stale.push(name); else fs.writeFileSync(out, text);
  }
  if (check && stale.length) { process.stderr.write('abis/ is stale for: ' + stale.join(', ') + ' (run make compile)\n'); process.exit(1); }
  process.stdout.write((check ? 'abis/ up to date' : 'compiled ' + Object.keys(artifacts).length + ' contracts') + ' (' + solc.version() + ', source hash ' + hash.slice(0, 12) + ')\n');
}

main();
