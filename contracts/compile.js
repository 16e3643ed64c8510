#!/usr/bin/env node
// Compile InferenceAnchor.sol with the pinned solc-js and write the committed artifact.
//
//   node compile.js            write InferenceAnchor.json next to this file
//   node compile.js --stdout   print the artifact instead (used by the tests to compare)
//   node compile.js --check    exit 1 when the committed artifact differs from a fresh build
//
// solc-js is a pure-JS/wasm compiler, so nothing is downloaded at compile time.
'use strict';

const fs = require('fs');
const path = require('path');
const crypto = require('crypto');
const solc = require('solc');

const SOURCE_NAME = 'InferenceAnchor.sol';
const CONTRACT_NAME = 'InferenceAnchor';
// shanghai: the newest fork both py-evm (eth-tester) and Hardhat run, and that public chains accept.
const EVM_VERSION = 'shanghai';
const OPTIMIZER = { enabled: true, runs: 200 };

const here = __dirname;
const artifactPath = path.join(here, `${CONTRACT_NAME}.json`);

function build() {
  const source = fs.readFileSync(path.join(here, SOURCE_NAME), 'utf8');
  const input = {
    language: 'Solidity',
    sources: { [SOURCE_NAME]: { content: source } },
    settings: {
      optimizer: OPTIMIZER,
      evmVersion: EVM_VERSION,
      outputSelection: { '*': { '*': ['abi', 'evm.bytecode.object', 'evm.deployedBytecode.object'] } },
    },
  };
  const output = JSON.parse(solc.compile(JSON.stringify(input)));
  const errors = (output.errors || []).filter((e) => e.severity === 'error');
  for (const e of output.errors || []) process.stderr.write(`${e.formattedMessage || e.message}\n`);
  if (errors.length > 0) {
    throw new Error(`solc reported ${errors.length} error(s)`);
  }
  const contract = output.contracts[SOURCE_NAME][CONTRACT_NAME];
  return {
    contractName: CONTRACT_NAME,
    sourceName: SOURCE_NAME,
    sourceSha256: crypto.createHash('sha256').update(source, 'utf8').digest('hex'),
    compiler: { name: 'solc-js', version: solc.version() },
    evmVersion: EVM_VERSION,
    optimizer: OPTIMIZER,
    abi: contract.abi,
    bytecode: '0x' + contract.evm.bytecode.object,
    deployedBytecode: '0x' + contract.evm.deployedBytecode.object,
  };
}

function render(artifact) {
  return JSON.stringify(artifact, null, 2) + '\n';
}

function main(argv) {
  const text = render(build());
  if (argv.includes('--stdout')) {
    process.stdout.write(text);
    return 0;
  }
  if (argv.includes('--check')) {
    const committed = fs.existsSync(artifactPath) ? fs.readFileSync(artifactPath, 'utf8') : '';
    if (committed !== text) {
      process.stderr.write(`${path.basename(artifactPath)} is stale: run \`node compile.js\` and commit it\n`);
      return 1;
    }
    process.stdout.write(`${path.basename(artifactPath)} is up to date\n`);
    return 0;
  }
  fs.writeFileSync(artifactPath, text);
  process.stdout.write(`wrote ${path.basename(artifactPath)} (solc ${solc.version()}, evm ${EVM_VERSION})\n`);
  return 0;
}

try {
  process.exitCode = main(process.argv.slice(2));
} catch (err) {
  process.stderr.write(`compile.js: ${err.message}\n`);
  process.exitCode = 1;
}
