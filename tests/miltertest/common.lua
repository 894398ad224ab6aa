-- Helpers shared by the miltertest scripts (loaded with dofile(scriptdir .. "common.lua")).
-- miltertest exits 1 silently on error(), also when an mt.* function raises one
-- (a bad argument, a step out of order): run(main) echoes every failure first.

function fail(msg)
	error(msg, 2)
end

function run(main)
	local ok, err = pcall(main)
	if not ok then
		mt.echo("FAIL " .. tostring(err))
		error(err)
	end
end

function check(cond, msg)
	if not cond then
		fail(msg)
	end
end

-- Run an mt.* step that returns nil on success, then check the milter's reply.
function step(what, err, conn, expected)
	if err ~= nil then
		fail(what .. ": " .. tostring(err))
	end
	if expected ~= nil then
		local got = mt.getreply(conn)
		if got ~= expected then
			fail(what .. ": reply " .. tostring(got) .. ", expected " .. tostring(expected))
		end
	end
end

-- Connect to the milter under test; "socket" comes from miltertest -D socket=...
function open_milter()
	check(socket ~= nil, "run with -D socket=<milter socket>")
	local conn = mt.connect(socket, 20, 0.1)
	check(conn ~= nil, "mt.connect(" .. socket .. ") failed")
	return conn
end

-- The reply expected for a step, or nil if the milter negotiated "no reply" for it.
function reply_unless(conn, nr_bit, expected)
	if nr_bit ~= nil and mt.test_option(conn, nr_bit) then
		return nil
	end
	return expected
end
