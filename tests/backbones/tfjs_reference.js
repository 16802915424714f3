// The TF.js reference for tests/backbones/test_tfjs.py: runs a graph model with TF.js's own CPU kernels.
// usage: NODE_PATH=<folder with node_modules> node tfjs_reference.js model.json input.f32 N,H,W,C output_node out.f32
// Input and output are raw little-endian float32, so neither side needs an .npy reader.
const fs = require('fs');
const path = require('path');
const tf = require('@tensorflow/tfjs-core');
require('@tensorflow/tfjs-backend-cpu');
const converter = require('@tensorflow/tfjs-converter');

async function main() {
  const [modelPath, inputPath, shapeArg, outputNode, outPath] = process.argv.slice(2);
  await tf.setBackend('cpu');
  const model = JSON.parse(fs.readFileSync(modelPath, 'utf8'));
  const specs = [];
  const buffers = [];
  for (const group of model.weightsManifest) {
    specs.push(...group.weights);
    for (const shard of group.paths) buffers.push(fs.readFileSync(path.join(path.dirname(modelPath), shard)));
  }
  const joined = Buffer.concat(buffers);
  const weightData = joined.buffer.slice(joined.byteOffset, joined.byteOffset + joined.byteLength);
  const graph = await converter.loadGraphModel(tf.io.fromMemory({
    modelTopology: model.modelTopology, weightSpecs: specs, weightData, format: model.format,
    generatedBy: model.generatedBy, convertedBy: model.convertedBy, signature: model.signature,
    userDefinedMetadata: model.userDefinedMetadata,
  }));
  const shape = shapeArg.split(',').map(Number);
  const raw = fs.readFileSync(inputPath);
  const input = tf.tensor(new Float32Array(raw.buffer, raw.byteOffset, raw.byteLength / 4), shape, 'float32');
  const out = graph.execute(input, outputNode);
  const data = await out.data();
  fs.writeFileSync(outPath, Buffer.from(data.buffer, data.byteOffset, data.byteLength));
  process.stdout.write(JSON.stringify({ shape: out.shape, backend: tf.getBackend(), version: tf.version_core }) + '\n');
}

main().catch((err) => { process.stderr.write(String(err && err.stack || err) + '\n'); process.exit(1); });
