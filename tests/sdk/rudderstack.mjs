// Sends every Segment-spec call type through the real @rudderstack/rudder-sdk-node SDK to Switchyard.
// Usage: node rudderstack.mjs <switchyard base URL> <write key>
// Driven by tests/tests/sdk_compat.rs, which checks what lands in the file sink.
import Analytics from '@rudderstack/rudder-sdk-node';

const [url, writeKey] = process.argv.slice(2);
if (!url || !writeKey) {
  console.error('usage: node rudderstack.mjs <url> <write key>');
  process.exit(2);
}

let failed = false;
const client = new Analytics(writeKey, {
  dataPlaneUrl: url,
  flushAt: 20,
  flushInterval: 100,
  retryCount: 0,
  logLevel: 'error',
  errorHandler: (error) => {
    failed = true;
    console.error('rudder-sdk-node error:', error?.message ?? error);
  },
});

const at = (second) => new Date(`2024-05-01T13:00:0${second}.000Z`);

client.track({
  userId: 'rs-user-1',
  event: 'Product Viewed',
  messageId: 'rs-track-1',
  timestamp: at(1),
  properties: { sku: 'B-7', price: 9.99, tags: ['new', 'sale'] },
});
client.identify({
  userId: 'rs-user-1',
  anonymousId: 'rs-anon-1',
  messageId: 'rs-identify-1',
  timestamp: at(2),
  traits: { plan: 'team', name: 'Grace Hopper' },
});
client.page({
  anonymousId: 'rs-anon-1',
  name: 'Docs',
  messageId: 'rs-page-1',
  timestamp: at(3),
  properties: { path: '/docs', url: 'https://shop.example/docs' },
});
client.screen({
  userId: 'rs-user-1',
  name: 'Cart',
  messageId: 'rs-screen-1',
  timestamp: at(4),
  properties: { items: 3 },
});
client.group({
  userId: 'rs-user-1',
  groupId: 'rs-globex',
  messageId: 'rs-group-1',
  timestamp: at(5),
  traits: { name: 'Globex', industry: 'energy' },
});
client.alias({
  userId: 'rs-user-1',
  previousId: 'rs-anon-1',
  messageId: 'rs-alias-1',
  timestamp: at(6),
});

await client.flush();
console.log(JSON.stringify({ sdk: '@rudderstack/rudder-sdk-node', sent: 6 }));
process.exit(failed ? 1 : 0);
