// The discord.js 14 bot that `make bench` measures side by side with ours.
//
// Written the way the discord.js guide shows (a Client with intents, a
// messageCreate listener, interaction.deferReply()), no tuning: default
// caches, default REST and WebSocket options. The only non-default option
// is where Discord is: `rest.api` points at the simulator, which also
// answers GET /gateway/bot with its own gateway URL. Compression is off,
// as is discord.js's default without zlib-sync.
//
// Bench instrumentation, outside the bot's work: a tiny HTTP server on
// 127.0.0.1:BENCH_STATS_PORT answering GET /stats with the counts, the
// time of every 1000th MESSAGE_CREATE (ms since the epoch); GET /reset
// zeroes them between runs.
//
//   NODE_PATH=build/bench/djs/node_modules DISCORD_TOKEN=... \
//   DISCORD_API=http://127.0.0.1:PORT/api BENCH_STATS_PORT=N node djs_bot.js
'use strict';
const http = require('node:http');
const { Client, Events, GatewayIntentBits } = require('discord.js');

const stats = { ready: false, messages: 0, first_ms: null, last_ms: null,
    marks: [], interactions: 0, deferred: 0, defer_errors: 0 };

const client = new Client({
    intents: [GatewayIntentBits.Guilds, GatewayIntentBits.GuildMessages, GatewayIntentBits.MessageContent],
    rest: { api: process.env.DISCORD_API },
});

client.once(Events.ClientReady, (readyClient) => {
    stats.ready = true;
    console.log(`Ready! Logged in as ${readyClient.user.tag}`);
});

client.on(Events.MessageCreate, (message) => {
    if (message.author.bot) return;
    const now = Date.now();
    stats.messages += 1;
    if (stats.first_ms === null) stats.first_ms = now;
    stats.last_ms = now;
    if (stats.messages % 1000 === 0) stats.marks.push(now);
});

client.on(Events.InteractionCreate, async (interaction) => {
    if (!interaction.isChatInputCommand()) return;
    stats.interactions += 1;
    try {
        await interaction.deferReply();
        stats.deferred += 1;
    } catch (error) {
        stats.defer_errors += 1;
        console.error(error);
    }
});

http.createServer((req, res) => {
    if (req.url === '/stats') {
        res.writeHead(200, { 'Content-Type': 'application/json' });
        res.end(JSON.stringify(stats));
    } else if (req.url === '/reset') {
        Object.assign(stats, { messages: 0, first_ms: null, last_ms: null, marks: [],
            interactions: 0, deferred: 0, defer_errors: 0 });
        res.writeHead(200, { 'Content-Type': 'application/json' });
        res.end('{}');
    } else {
        res.writeHead(404);
        res.end();
    }
}).listen(Number(process.env.BENCH_STATS_PORT), '127.0.0.1');

client.login(process.env.DISCORD_TOKEN);
