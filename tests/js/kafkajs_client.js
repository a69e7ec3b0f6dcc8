// Produce events with kafkajs (its default partitioner is Java-compatible murmur2), then read
// profile-updates until every user produced here has a record; prints those records as JSON lines.
// usage: node kafkajs_client.js BROKER EVENTS_TOPIC UPDATES_TOPIC EVENTS_JSONL
const fs = require("fs");
const { Kafka, logLevel } = require("kafkajs");

async function main() {
  const [broker, eventsTopic, updatesTopic, eventsFile] = process.argv.slice(2);
  const kafka = new Kafka({ clientId: "kafkajs-interop", brokers: [broker], logLevel: logLevel.ERROR });
  const lines = fs.readFileSync(eventsFile, "utf8").split("\n").filter(Boolean);
  const wanted = new Set();
  const producer = kafka.producer();
  await producer.connect();
  await producer.send({
    topic: eventsTopic,
    messages: lines.map((l) => {
      const uid = String(JSON.parse(l).user_id);
      wanted.add(uid);
      return { key: uid, value: l };
    }),
  });
  await producer.disconnect();

  const consumer = kafka.consumer({ groupId: "kafkajs-interop-" + Date.now(), sessionTimeout: 10000, heartbeatInterval: 1000 });
  await consumer.connect();
  await consumer.subscribe({ topic: updatesTopic, fromBeginning: true });
  const seen = new Map();
  const done = new Promise((resolve) => {
    consumer.run({
      eachMessage: async ({ message }) => {
        const key = message.key.toString();
        if (wanted.has(key)) seen.set(key, message.value.toString());
        if (seen.size === wanted.size) resolve();
      },
    });
  });
  let timer;
  const timeout = new Promise((_, reject) => { timer = setTimeout(() => reject(new Error(
    `timed out: ${seen.size} of ${wanted.size} users have profile updates`)), 90000); });
  await Promise.race([done, timeout]);
  clearTimeout(timer);
  for (const v of seen.values()) console.log(v);
  await consumer.disconnect();
}

main().then(() => process.exit(0), (e) => { console.error(e.message || e); process.exit(1); });
