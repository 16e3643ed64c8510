#!/usr/bin/env node
// Compile the contracts with the pinned solc-js and write the committed artifacts.
//
//   node compile.js                  write InferenceAnchor.json and InferenceBounty.json next to this file
//   node compile.js --stdout [NAME]  print one artifact instead (default InferenceAnchor; used by the tests)
//   node compile.js --check          exit 1 when a committed artifact differs from a fresh build
//
// solc-js is a pure-JS/wasm compiler, so nothing is downloaded at compile time.
'use strict';

const fs = require('fs');
const path = require('path');
const crypto = require('crypto');
const solc = require('solc');

const CONTRACTS = ['InferenceAnchor', 'InferenceBounty'];
// shanghai: the newest fork both py-evm (eth-tester) and Hardhat run, and that public chains accept.
const EVM_VERSION = 'shanghai';
const OPTIMIZER = { enabled: true, runs: 200 };

const here = __dirname;
const artifactPath = (name) => path.join(here, `${name}.json`);

function build(CONTRACT_NAME) {
  const SOURCE_NAME = `${CONTRACT_NAME}.sol`;
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
  const at = argv.indexOf('--stdout');
  if (at >= 0) {
    const name = argv[at + 1] || CONTRACTS[0];
    if (!CONTRACTS.includes(name)) throw new Error(`unknown contract ${name} (expected ${CONTRACTS.join(', ')})`);
    process.stdout.write(render(build(name)));
    return 0;
  }
  let status = 0;
  for (const name of CONTRACTS) {
    const text = render(build(name));
    const file = artifactPath(name);
    if (argv.includes('--check')) {
      const committed = fs.existsSync(file) ? fs.readFileSync(file, 'utf8') : '';
      if (committed !== text) {
        process.stderr.write(`${path.basename(file)} is stale: run \`node compile.js\` and commit it\n`);
        status = 1;
      } else {
        process.stdout.write(`${path.basename(file)} is up to date\n`);
      }
      continue;
    }
    fs.writeFileSync(file, text);
    process.stdout.write(`wrote ${path.basename(file)} (solc ${solc.version()}, evm ${EVM_VERSION})\n`);
  }
  return status;
}

try {
  process.exitCode = main(process.argv.slice(2));
} catch (err) {
  process.stderr.write(`compile.js: ${err.message}\n`);
  process.exitCode = 1;
}
