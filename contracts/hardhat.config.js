// Hardhat here only serves a local JSON-RPC node for tests (`hardhat node --hostname 127.0.0.1`).
// The contract is compiled by compile.js with solc-js, so Hardhat never compiles or downloads a compiler:
// its sources folder points at a directory that does not exist.
module.exports = {
  paths: { sources: './.hardhat-no-sources', cache: './cache', artifacts: './artifacts' },
  networks: {
    hardhat: {
      chainId: 31337,
      hardfork: 'cancun',
      mining: { auto: true, interval: 0 },
    },
  },
};
