#!/usr/bin/env node
/** The standalone queue node's executable (the Docker image's command; package.json `bin`). */
import { runQueueNode } from "./server";

runQueueNode(process.env);
