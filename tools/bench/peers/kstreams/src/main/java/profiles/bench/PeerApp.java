package profiles.bench;

import com.fasterxml.jackson.core.JsonFactory;
import com.fasterxml.jackson.core.JsonParser;
import com.fasterxml.jackson.core.JsonToken;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.time.Duration;
import java.util.Properties;
import java.util.concurrent.CountDownLatch;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.Produced;
import org.apache.kafka.streams.processor.api.Processor;
import org.apache.kafka.streams.processor.api.ProcessorContext;
import org.apache.kafka.streams.processor.api.Record;
import org.apache.kafka.streams.state.KeyValueStore;
import org.apache.kafka.streams.state.Stores;

/**
 * The Kafka Streams peer of `make bench`: per user, per-day counts per action over the last
 * 30 days and a dwell sum, kept in a RocksDB store with its changelog, and a record out per
 * change. The same work as tools/bench/peers/quix_peer.py (see tools/bench/peers/__init__.py).
 *
 * <p>Arguments: bootstrap servers, input topic, output topic, application id, state dir,
 * processing guarantee (at_least_once or exactly_once_v2).
 */
public final class PeerApp {
    static final String STORE = "user-days";
    static final int ACTIONS = 4;           // action codes 0..3
    static final int DAYS = 30;
    static final long MS_THRESHOLD = 100_000_000_000L;  // a timestamp at or above it is in ms

    public static void main(String[] args) throws InterruptedException {
        if (args.length != 6) {
            System.err.println("usage: PeerApp BOOTSTRAP IN OUT APP_ID STATE_DIR GUARANTEE");
            System.exit(2);
        }
        Properties p = new Properties();
        p.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, args[0]);
        p.put(StreamsConfig.APPLICATION_ID_CONFIG, args[3]);
        p.put(StreamsConfig.STATE_DIR_CONFIG, args[4]);
        p.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG, args[5]);
        p.put(StreamsConfig.COMMIT_INTERVAL_MS_CONFIG, 1000);     // as our workers' default
        p.put(StreamsConfig.NUM_STREAM_THREADS_CONFIG, 1);
        p.put(StreamsConfig.REPLICATION_FACTOR_CONFIG, 1);
        p.put(StreamsConfig.consumerPrefix(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG), "earliest");

        StreamsBuilder b = new StreamsBuilder();
        b.addStateStore(Stores.keyValueStoreBuilder(
                Stores.persistentKeyValueStore(STORE), Serdes.String(), Serdes.ByteArray()));
        b.stream(args[1], Consumed.with(Serdes.String(), Serdes.ByteArray()))
                .process(UserDays::new, STORE)
                .to(args[2], Produced.with(Serdes.String(), Serdes.String()));
        KafkaStreams streams = new KafkaStreams(b.build(), p);
        CountDownLatch done = new CountDownLatch(1);
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            streams.close(Duration.ofSeconds(10));
            done.countDown();
        }));
        streams.start();
        done.await();
    }

    /** One event's fields, or null when the value is not a well-formed event. */
    record Event(String user, long day, int action, long dwellMs) {}

    static final JsonFactory JSON = new JsonFactory();

    static Event parse(byte[] value) {
        if (value == null) {
            return null;
        }
        long user = -1;
        long ts = -1;
        int action = -1;
        long dwellMs = 0;
        try (JsonParser in = JSON.createParser(value)) {
            if (in.nextToken() != JsonToken.START_OBJECT) {
                return null;
            }
            while (in.nextToken() == JsonToken.FIELD_NAME) {
                String name = in.currentName();
                JsonToken t = in.nextToken();
                switch (name) {
                    case "user_id" -> user = t == JsonToken.VALUE_NUMBER_INT ? in.getLongValue() : -1;
                    case "timestamp" -> ts = t == JsonToken.VALUE_NUMBER_INT ? in.getLongValue() : -1;
                    case "action_type" -> action = t == JsonToken.VALUE_NUMBER_INT ? in.getIntValue() : -1;
                    case "dwell_time" -> {
                        if (t.isNumeric()) {
                            dwellMs = Math.round(in.getDoubleValue() * 1000);
                        } else if (t != JsonToken.VALUE_NULL) {
                            return null;        // neither a number nor null
                        }
                    }
                    default -> in.skipChildren();
                }
            }
        } catch (IOException | RuntimeException e) {
            return null;
        }
        if (user < 0 || ts < 0 || action < 0 || action >= ACTIONS) {
            return null;
        }
        long seconds = ts >= MS_THRESHOLD ? ts / 1000 : ts;
        return new Event(Long.toString(user), seconds / 86_400, action, dwellMs);
    }

    /** State: dwell sum (long), then per kept day: the day (int) and a count per action. */
    static final class UserDays implements Processor<String, byte[], String, String> {
        private ProcessorContext<String, String> context;
        private KeyValueStore<String, byte[]> store;

        @Override
        public void init(ProcessorContext<String, String> context) {
            this.context = context;
            this.store = context.getStateStore(STORE);
        }

        @Override
        public void process(Record<String, byte[]> record) {
            Event e = parse(record.value());
            if (e == null) {
                return;                         // malformed: dropped
            }
            byte[] old = store.get(e.user());
            long dwell = e.dwellMs();
            long[] days = new long[DAYS + 1];
            int[][] counts = new int[DAYS + 1][];
            int n = 0;
            long latest = e.day();
            if (old != null) {
                ByteBuffer in = ByteBuffer.wrap(old);
                dwell += in.getLong();
                while (in.remaining() > 0) {
                    days[n] = in.getInt();
                    counts[n] = new int[ACTIONS];
                    for (int a = 0; a < ACTIONS; a++) {
                        counts[n][a] = in.getInt();
                    }
                    latest = Math.max(latest, days[n]);
                    n++;
                }
            }
            int at = -1;
            for (int i = 0; i < n; i++) {
                if (days[i] == e.day()) {
                    at = i;
                }
            }
            if (at < 0) {
                days[n] = e.day();
                counts[n] = new int[ACTIONS];
                at = n++;
            }
            counts[at][e.action()]++;
            ByteBuffer out = ByteBuffer.allocate(8 + n * 4 * (1 + ACTIONS));
            out.putLong(dwell);
            long[] totals = new long[ACTIONS];
            for (int i = 0; i < n; i++) {
                if (days[i] <= latest - DAYS) {
                    continue;                   // older than the 30 days
                }
                out.putInt((int) days[i]);
                for (int a = 0; a < ACTIONS; a++) {
                    out.putInt(counts[i][a]);
                    totals[a] += counts[i][a];
                }
            }
            byte[] value = new byte[out.position()];
            System.arraycopy(out.array(), 0, value, 0, value.length);
            store.put(e.user(), value);
            StringBuilder s = new StringBuilder(96).append("{\"user_id\":").append(e.user())
                    .append(",\"day\":").append(latest).append(",\"counts_30d\":[");
            for (int a = 0; a < ACTIONS; a++) {
                s.append(a == 0 ? "" : ",").append(totals[a]);
            }
            s.append("],\"dwell_ms\":").append(dwell).append('}');
            context.forward(record.withKey(e.user()).withValue(s.toString()));
        }
    }

    private PeerApp() {}
}
