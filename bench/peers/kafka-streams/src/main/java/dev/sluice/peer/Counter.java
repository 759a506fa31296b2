/*
 * Counter: the Kafka Streams twin of tests/apps/counter, for `make bench-peer`
 * (bench/peers/kafka-streams/README.md). For each input record (key "k17",
 * value a decimal sequence number) it
 *   - echoes it unchanged to the echo topic, and
 *   - updates the per-key aggregate "count,sum,min" in the persistent
 *     (RocksDB) store "agg", logged to the changelog topic
 *     <application.id>-agg-changelog, and emits the new aggregate to the agg
 *     topic;
 * a record without a key or whose value is not a decimal number goes to the
 * dead-letter topic instead, as the counter's source validator sends it.
 * (The counter's test hooks, the "reject" header, "g:" keys and
 * --crash-after, are left out: the benchmark's input never uses them.)
 *
 * Configuration: Kafka Streams' defaults except processing.guarantee =
 * exactly_once_v2, commit.interval.ms = 100 (EOS's default anyway),
 * num.stream.threads = 1 (the default anyway), state.dir, and, with
 * --cache off, statestore.cache.max.bytes = 0. With the record cache on
 * (its default, 10 MiB) the store coalesces updates of a key between commits,
 * so fewer aggregate and changelog records are written than with it off.
 *
 * usage: Counter --bootstrap H:P --application-id ID --input T --echo T
 *                --agg T --dlq T --state-dir DIR --port N [--cache on|off]
 *
 * GET http://127.0.0.1:<port>/readyz answers 200 once the instance is
 * RUNNING (every store restored) and 503 before, with the body
 * {"state": S, "engine": {"restored_records": R, "records_in": N}}, the
 * fields bench/bench_engine.c reads from the counter's /readyz. Each
 * restored store partition logs
 * "task <topic-partition> running (restored N records in M ms)" to stdout,
 * the line bench_engine reads from the counter's log. SIGTERM closes the
 * instance cleanly (state flushed, checkpoints written) and exits 0.
 */
package dev.sluice.peer;

import com.sun.net.httpserver.HttpServer;
import java.io.IOException;
import java.io.OutputStream;
import java.net.InetSocketAddress;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.HashMap;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.atomic.AtomicLong;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.kstream.Branched;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.Grouped;
import org.apache.kafka.streams.kstream.KStream;
import org.apache.kafka.streams.kstream.Materialized;
import org.apache.kafka.streams.kstream.Named;
import org.apache.kafka.streams.kstream.Produced;
import org.apache.kafka.streams.processor.StateRestoreListener;
import org.apache.kafka.streams.state.Stores;

public final class Counter {
    private static final AtomicLong recordsIn = new AtomicLong();
    private static final AtomicLong restoredRecords = new AtomicLong();

    private Counter() {}

    /** The counter's validator: a key, and a value that parses as a long. */
    static boolean valid(String key, String value) {
        if (key == null || key.isEmpty() || value == null || value.isEmpty())
            return false;
        try {
            Long.parseLong(value);
            return true;
        } catch (NumberFormatException e) {
            return false;
        }
    }

    /** The counter's update: "count,sum,min" of the key, given the new value. */
    static String aggregate(String value, String old) {
        long v = Long.parseLong(value), n = 0, sum = 0, min = 0;
        if (!old.isEmpty()) {
            String[] parts = old.split(",", 3);
            n = Long.parseLong(parts[0]);
            sum = Long.parseLong(parts[1]);
            min = Long.parseLong(parts[2]);
        }
        min = n == 0 || v < min ? v : min;
        recordsIn.incrementAndGet();
        return (n + 1) + "," + (sum + v) + "," + min;
    }

    static StreamsBuilder topology(Map<String, String> opt) {
        StreamsBuilder builder = new StreamsBuilder();
        KStream<String, String> data =
            builder.stream(opt.get("--input"), Consumed.with(Serdes.String(), Serdes.String()));
        Map<String, KStream<String, String>> split =
            data.split(Named.as("data-"))
                .branch(Counter::valid, Branched.as("valid"))
                .defaultBranch(Branched.as("invalid"));
        Produced<String, String> produced = Produced.with(Serdes.String(), Serdes.String());
        split.get("data-invalid").to(opt.get("--dlq"), produced);
        KStream<String, String> valid = split.get("data-valid");
        valid.to(opt.get("--echo"), produced);
        valid.groupByKey(Grouped.with(Serdes.String(), Serdes.String()))
            .aggregate(() -> "", (key, value, old) -> aggregate(value, old),
                       Materialized.<String, String>as(Stores.persistentKeyValueStore("agg"))
                           .withKeySerde(Serdes.String())
                           .withValueSerde(Serdes.String()))
            .toStream()
            .to(opt.get("--agg"), produced);
        return builder;
    }

    static Properties config(Map<String, String> opt) {
        Properties props = new Properties();
        props.put(StreamsConfig.APPLICATION_ID_CONFIG, opt.get("--application-id"));
        props.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, opt.get("--bootstrap"));
        props.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG, StreamsConfig.EXACTLY_ONCE_V2);
        props.put(StreamsConfig.COMMIT_INTERVAL_MS_CONFIG, 100);
        props.put(StreamsConfig.NUM_STREAM_THREADS_CONFIG, 1);
        props.put(StreamsConfig.STATE_DIR_CONFIG, opt.get("--state-dir"));
        if ("off".equals(opt.getOrDefault("--cache", "on")))
            props.put(StreamsConfig.STATESTORE_CACHE_MAX_BYTES_CONFIG, 0L);
        return props;
    }

    /** Prints one line per restored store partition, as the counter logs its tasks. */
    static final class RestoreLog implements StateRestoreListener {
        private final Map<TopicPartition, Long> started = new ConcurrentHashMap<>();

        @Override
        public void onRestoreStart(TopicPartition partition, String store, long start, long end) {
            started.put(partition, System.nanoTime());
        }

        @Override
        public void onBatchRestored(TopicPartition partition, String store, long batchEnd,
                                    long restored) {
            restoredRecords.addAndGet(restored);
        }

        @Override
        public void onRestoreEnd(TopicPartition partition, String store, long total) {
            Long t0 = started.remove(partition);
            long ms = t0 == null ? 0 : (System.nanoTime() - t0) / 1_000_000;
            System.out.printf("task %s running (restored %d records in %d ms)%n", partition, total,
                              ms);
            System.out.flush();
        }
    }

    static HttpServer readyz(int port, KafkaStreams streams) throws IOException {
        HttpServer server = HttpServer.create(new InetSocketAddress("127.0.0.1", port), 16);
        server.createContext("/readyz", exchange -> {
            KafkaStreams.State state = streams.state();
            String body = String.format(
                "{\"state\":\"%s\",\"engine\":{\"restored_records\":%d,\"records_in\":%d}}", state,
                restoredRecords.get(), recordsIn.get());
            byte[] bytes = body.getBytes(StandardCharsets.UTF_8);
            exchange.getResponseHeaders().set("Content-Type", "application/json");
            exchange.sendResponseHeaders(state == KafkaStreams.State.RUNNING ? 200 : 503,
                                         bytes.length);
            try (OutputStream out = exchange.getResponseBody()) {
                out.write(bytes);
            }
        });
        server.start();
        return server;
    }

    public static void main(String[] args) throws Exception {
        Map<String, String> opt = new HashMap<>();
        for (int i = 0; i + 1 < args.length; i += 2)
            opt.put(args[i], args[i + 1]);
        for (String required : new String[] {"--bootstrap", "--application-id", "--input",
                                             "--echo", "--agg", "--dlq", "--state-dir", "--port"})
            if (!opt.containsKey(required) || args.length % 2 != 0) {
                System.err.println("usage: Counter --bootstrap H:P --application-id ID --input T "
                                   + "--echo T --agg T --dlq T --state-dir DIR --port N "
                                   + "[--cache on|off]");
                System.exit(2);
            }
        KafkaStreams streams = new KafkaStreams(topology(opt).build(), config(opt));
        streams.setGlobalStateRestoreListener(new RestoreLog());
        streams.setStateListener((now, before) -> {
            System.out.printf("state %s -> %s%n", before, now);
            System.out.flush();
        });
        HttpServer server = readyz(Integer.parseInt(opt.get("--port")), streams);
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            boolean closed = streams.close(Duration.ofSeconds(60));
            server.stop(0);
            System.out.printf("closed %s, %d records in%n", closed ? "cleanly" : "with a timeout",
                              recordsIn.get());
            System.out.flush();
            /* halt, not exit: a JVM ending on SIGTERM exits 143 even after a
             * clean close; 0 says the close finished. */
            Runtime.getRuntime().halt(closed ? 0 : 1);
        }));
        streams.start();
        Thread.currentThread().join();
    }
}
