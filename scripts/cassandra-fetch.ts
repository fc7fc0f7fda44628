/** Downloads Apache Cassandra's jars into .cache/cassandra/lib (CI runs it before the tests). */
import { fetchCassandraJars } from "./cassandra-launcher";

fetchCassandraJars()
  .then(libDir => process.stderr.write(`[cassandra] jars ready in ${libDir}\n`))
  .catch((error: Error) => {
    process.stderr.write(`${error.message}\n`);
    process.exit(1);
  });
